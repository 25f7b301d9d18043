"""N:M sparsity benchmark: dense vs SR-STE, ASP and STEP at several patterns, with CIs over seeds.

Each recipe trains the same model from the same initialisation (per seed) with Adam for the same
number of epochs in a hand-written loop that calls the hooks in the engine's order; the exported
model is checked to satisfy the N:M pattern exactly. Tasks:

- ``digits`` (default): scikit-learn digits, a 4-layer MLP (64-W-W-W-10, W = ``--width`` 64; the
  two middle layers are masked) on a 500-image training split, accuracy on the other 1297. Dense
  is at about 0.95-0.96, not at its ceiling, and a seed takes seconds.
- ``cxr``: the synthetic chest X-ray task with a small CNN, validation AUC (slow; near ceiling).

Reported per recipe and pattern: mean score with a t-interval over seeds, the paired difference
to dense (same seed) with its t-interval, the STEP switch step, and time per epoch.

Run: ``.venv/bin/python benchmarks/sparsity.py`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from medbench.eval.intervals import t_interval
from medbench.train.hooks import SPARSITY, TrainHook, load_builtin_entries
from medbench.train.sparsity import check_nm_model

load_builtin_entries()


def cnn() -> nn.Module:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

    return nn.Sequential(
        *block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
        *block(64, 64), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 64), nn.ReLU(),
        nn.Linear(64, 1),
    )


def mlp(width: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


def digits_data(n_train: int) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = torch.tensor(x[order] / 16.0, dtype=torch.float32), torch.tensor(y[order])
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def data(n_train: int, n_val: int, size: int) -> tuple[torch.Tensor, ...]:
    from medbench.data.synthetic import make_cxr

    xtr, mtr = make_cxr(n_train, size=size, seed=0)
    xva, mva = make_cxr(n_val, size=size, seed=1)
    return (torch.tensor(xtr)[:, None], torch.tensor(mtr["label"].to_numpy()).float(),
            torch.tensor(xva)[:, None], torch.tensor(mva["label"].to_numpy()).float())


class _Cfg:
    def __init__(self, epochs: int, lr: float) -> None:
        self.epochs, self.lr, self.weight_decay, self.optimizer = epochs, lr, 0.0, "adam"


def train(recipe: str | None, options: dict[str, Any], d: tuple[torch.Tensor, ...], *, epochs: int,
          lr: float, batch: int, seed: int = 0, pattern: str = "2:4", task: str = "digits",
          log_epochs: bool = False, width: int = 64) -> dict[str, Any]:
    xtr, ytr, xva, yva = d
    torch.manual_seed(seed)
    model = mlp(width) if task == "digits" else cnn()
    hook: TrainHook = SPARSITY.create(recipe, pattern=pattern, **options) if recipe else TrainHook()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = hook.make_optimizer(params, _Cfg(epochs, lr)) or torch.optim.Adam(params, lr=lr)
    hook.on_train_start(model, opt)
    loss_fn = nn.CrossEntropyLoss() if task == "digits" else nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    step, times = 0, []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(ytr), generator=gen)
        for k in range(0, len(perm), batch):
            idx = perm[k : k + batch]
            opt.zero_grad(set_to_none=True)
            out = model(xtr[idx])
            loss_fn(out if task == "digits" else out.squeeze(1), ytr[idx]).backward()
            hook.after_backward(model, step)
            opt.step()
            hook.after_step(model, opt, step)
            step += 1
        hook.on_epoch_end(model, epoch)
        times.append(time.perf_counter() - t0)
        if log_epochs:
            print(f"    {recipe or 'dense'} epoch {epoch}: {times[-1]:.1f} s", flush=True)
    model = hook.on_train_end(model)
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(xva[k : k + 256]) for k in range(0, len(yva), 256)])
    if task == "digits":
        score = float((out.argmax(1) == yva).float().mean())
    else:
        from sklearn.metrics import roc_auc_score

        score = float(roc_auc_score(yva.numpy(), out.squeeze(1).numpy()))
    res = {"score": score, "epoch_s": float(np.median(times)), "summary": hook.summary()}
    if recipe:
        n, m = (int(v) for v in pattern.split(":"))
        res["nm_ok"] = all(check_nm_model(model, res["summary"]["layers"], n, m).values())
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["digits", "cxr"], default="digits")
    ap.add_argument("--n", type=int, default=None, help="training samples (digits 500, cxr 3000)")
    ap.add_argument("--n-val", type=int, default=600, help="cxr validation images")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=None, help="digits 20, cxr 10")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=64, help="digits MLP hidden width (a multiple of 8)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--patterns", default="2:4,1:8")
    ap.add_argument("--recipes", default="dense,srste,asp,step")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)  # small models: one thread is fastest, and fair on shared machines
    digits = args.task == "digits"
    n = args.n or (500 if digits else 3000)
    epochs = args.epochs or (20 if digits else 10)
    d = digits_data(n) if digits else data(n, args.n_val, args.size)
    steps = epochs * -(-n // args.batch)
    options = {"srste": {}, "asp": {}, "step": {"t_min": steps // 10, "t_max": steps // 2}}
    metric = "accuracy" if digits else "AUC"
    print(f"{args.task}{f' MLP width {args.width}' if digits else ''}: {n} train / {len(d[3])} val, {epochs} epochs, Adam lr {args.lr}, batch "
          f"{args.batch} ({steps} steps), {args.seeds} seeds; held-out {metric}, 95% t-intervals")
    t_start = time.perf_counter()
    names = args.recipes.split(",")
    results: dict[str, Any] = {}
    dense: list[float] = []
    if "dense" in names:
        runs = [train(None, {}, d, epochs=epochs, lr=args.lr, batch=args.batch, seed=s, task=args.task,
                      width=args.width) for s in range(args.seeds)]
        dense = [r["score"] for r in runs]
        mean, lo, hi, _ = t_interval(dense)
        results["dense"] = {"scores": dense, "mean": mean, "ci": [lo, hi],
                            "epoch_s": float(np.median([r["epoch_s"] for r in runs]))}
        print(f"  {'dense':6s}      {metric} {mean:.4f} [{lo:.4f}, {hi:.4f}]  epoch "
              f"{results['dense']['epoch_s']:.3f} s", flush=True)
    for pattern in args.patterns.split(","):
        for name in names:
            if name == "dense":
                continue
            runs = [train(name, options[name], d, epochs=epochs, lr=args.lr, batch=args.batch, seed=s,
                          pattern=pattern, task=args.task, width=args.width) for s in range(args.seeds)]
            scores = [r["score"] for r in runs]
            mean, lo, hi, _ = t_interval(scores)
            key = f"{name} {pattern}"
            results[key] = {"scores": scores, "mean": mean, "ci": [lo, hi],
                            "nm_ok": all(r["nm_ok"] for r in runs),
                            "epoch_s": float(np.median([r["epoch_s"] for r in runs]))}
            line = f"  {key:11s} {metric} {mean:.4f} [{lo:.4f}, {hi:.4f}]"
            if dense:
                dm, dlo, dhi, _ = t_interval([a - b for a, b in zip(scores, dense, strict=True)])
                results[key]["vs_dense"] = {"mean": dm, "ci": [dlo, dhi]}
                line += f"  vs dense {100 * dm:+.2f} pts [{100 * dlo:+.2f}, {100 * dhi:+.2f}]"
            epoch_ratio = results[key]["epoch_s"] / results["dense"]["epoch_s"] if dense else float("nan")
            line += f"  epoch {results[key]['epoch_s']:.3f} s ({epoch_ratio:.2f}x dense)"
            line += f"  exact {pattern}: {results[key]['nm_ok']}"
            if name == "step":
                sw = [r["summary"]["switch_step"] for r in runs]
                why = {r["summary"]["switch_reason"] for r in runs}
                results[key]["switch_steps"] = sw
                line += f"  switch steps {sw} ({'/'.join(sorted(why))})"
            print(line, flush=True)
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)


if __name__ == "__main__":
    main()

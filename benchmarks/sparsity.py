"""2:4 sparsity benchmark: dense vs SR-STE, ASP and STEP on the synthetic chest X-ray task.

Each recipe trains the same small CNN from the same initialisation with Adam for the same number
of epochs in a hand-written loop that calls the hooks in the engine's order; the exported model
is checked to satisfy the N:M pattern exactly, and its validation AUC is compared with the dense
model's (goal: within 1 AUC point). Also reports the STEP switch step and time per epoch.

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
          lr: float, batch: int, seed: int = 0) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    xtr, ytr, xva, yva = d
    torch.manual_seed(seed)
    model = cnn()
    hook: TrainHook = SPARSITY.create(recipe, pattern="2:4", **options) if recipe else TrainHook()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = hook.make_optimizer(params, _Cfg(epochs, lr)) or torch.optim.Adam(params, lr=lr)
    hook.on_train_start(model, opt)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)
    step, times = 0, []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(len(ytr), generator=gen)
        for k in range(0, len(perm), batch):
            idx = perm[k : k + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xtr[idx]).squeeze(1), ytr[idx]).backward()
            hook.after_backward(model, step)
            opt.step()
            hook.after_step(model, opt, step)
            step += 1
        hook.on_epoch_end(model, epoch)
        times.append(time.perf_counter() - t0)
        print(f"    {recipe or 'dense'} epoch {epoch}: {times[-1]:.1f} s", flush=True)
    model = hook.on_train_end(model)
    model.eval()
    with torch.no_grad():
        score = torch.cat([model(xva[k : k + 256]).squeeze(1) for k in range(0, len(yva), 256)])
    out = {"auc": float(roc_auc_score(yva.numpy(), score.numpy())),
           "epoch_s": float(np.median(times)), "summary": hook.summary()}
    if recipe:
        layers = out["summary"]["layers"]
        out["nm_ok"] = all(check_nm_model(model, layers, 2, 4).values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="training images")
    ap.add_argument("--n-val", type=int, default=600)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--recipes", default="dense,srste,asp,step")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)  # small convs: one thread is fastest, and fair on shared machines
    d = data(args.n, args.n_val, args.size)
    steps = args.epochs * -(-args.n // args.batch)
    options = {
        "srste": {}, "asp": {},
        "step": {"t_min": steps // 10, "t_max": steps // 2},
    }
    print(f"synthetic CXR {args.n} train / {args.n_val} val at {args.size}px, {args.epochs} epochs, "
          f"Adam lr {args.lr}, batch {args.batch} ({steps} steps)")
    results: dict[str, Any] = {}
    for name in args.recipes.split(","):
        recipe = None if name == "dense" else name
        results[name] = train(recipe, options.get(name, {}), d, epochs=args.epochs, lr=args.lr,
                              batch=args.batch)
        r = results[name]
        extra = ""
        if name == "step":
            extra = f"  switch at step {r['summary']['switch_step']} ({r['summary']['switch_reason']})"
        if recipe:
            extra += f"  exported 2:4 ok={r['nm_ok']}  layers={len(r['summary']['layers'])}"
        dense = results.get("dense", {}).get("auc")
        delta = f"  dAUC {100 * (r['auc'] - dense):+.2f} pts" if dense is not None and recipe else ""
        print(f"  {name:6s} val AUC {r['auc']:.4f}{delta}  epoch {r['epoch_s']:.2f} s{extra}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)


if __name__ == "__main__":
    main()

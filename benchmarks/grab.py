"""GraB benchmark: suboptimality on L2-regularised softmax regression, and cost on a small CNN.

Part 1 (``--part digits``): scikit-learn digits, softmax regression with L2 penalty ``lam``,
minibatch SGD at a constant learning rate with exact per-example gradients. The optimum ``f*`` is
found with L-BFGS to ~1e-11 gradient norm; the reported figure is ``f(w) - f*`` averaged over
the last ``plateau`` epochs (the constant-LR plateau), per seed, for rr / so / grab / pair.

Part 2 (``--part cxr``): the synthetic chest X-ray task (``medbench.data.synthetic.make_cxr``)
with a small BatchNorm CNN trained by Adam in a hand-written loop that calls the samplers like the
engine does (forward, backward, ``observe``, step), the variants interleaved epoch by epoch so
that machine load hits them alike. Reports train loss, validation AUC and median epoch time of
RR, GraB/pair balance on the training step's own Linear/Conv2d gradients ("tap", count-sketched
to 1024 dims; optionally with conv gradients projected to 8 directions per filter, or on the last
layers only) and GraB with a second vmap pass over all parameters.

Run: ``.venv/bin/python benchmarks/grab.py --part all``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from medbench.train.hooks import ORDERINGS, load_builtin_entries

load_builtin_entries()


# ----------------------------------------------------------------------------- part 1
def digits_problem() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = np.hstack([x / 16.0, np.ones((len(x), 1))])  # features in [0, 1] plus a bias column
    return torch.tensor(x, dtype=torch.float64), torch.tensor(y)


def objective(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[float, torch.Tensor]:
    """Full objective and gradient of L2-regularised softmax regression (w: (d, C))."""
    z = x @ w
    f = (torch.logsumexp(z, 1) - z[torch.arange(len(y)), y]).mean() + lam / 2 * (w**2).sum()
    p = torch.softmax(z, 1)
    p[torch.arange(len(y)), y] -= 1
    return float(f), x.T @ p / len(y) + lam * w


def optimum(x: torch.Tensor, y: torch.Tensor, lam: float, classes: int = 10) -> float:
    from scipy.optimize import minimize

    d = x.shape[1]

    def fg(v: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = objective(torch.tensor(v).view(d, classes), x, y, lam)
        return f, g.flatten().numpy()

    res = minimize(fg, np.zeros(d * classes), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=50_000, ftol=1e-16, gtol=1e-11, maxcor=50))
    return float(res.fun), float(np.abs(res.jac).max())


def make_sampler(order: str, n: int, seed: int) -> Any:
    opts = {"sketch_dim": None} if order in ("grab", "pair") else {}
    return ORDERINGS.create(order, dataset_size=n, seed=seed, **opts)


def sgd_run(order: str, seed: int, x: torch.Tensor, y: torch.Tensor, fstar: float, *,
            lam: float, lr: float, batch: int, epochs: int, classes: int = 10) -> list[float]:
    """Constant-LR minibatch SGD; returns f(w) - f* after each epoch."""
    n, d = x.shape
    onehot = nn.functional.one_hot(y, classes).double()
    sampler = make_sampler(order, n, seed)
    w = torch.zeros(d, classes, dtype=torch.float64)
    trace = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        order_now = list(sampler)
        for k in range(0, n, batch):
            idx = order_now[k : k + batch]
            p = torch.softmax(x[idx] @ w, 1)
            g = x[idx][:, :, None] * (p - onehot[idx])[:, None, :] + lam * w  # exact per-example
            if hasattr(sampler, "step"):
                sampler.step(g.reshape(len(idx), -1), idx)
            w -= lr * g.mean(0)
        if hasattr(sampler, "end_epoch"):
            sampler.end_epoch()
        trace.append(objective(w, x, y, lam)[0] - fstar)
    return trace


def run_digits(seeds: int, epochs: int, plateau: int, lam: float, lr: float, batch: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    x, y = digits_problem()
    fstar, gnorm = optimum(x, y, lam)
    print(f"digits: n={len(y)}, d={x.shape[1]}x10, lam={lam}, lr={lr}, batch={batch}, "
          f"epochs={epochs}; f*={fstar:.12f} (L-BFGS max|grad|={gnorm:.1e})")
    rows = []
    for seed in range(seeds):
        row: dict[str, Any] = {"seed": seed}
        for order in ("rr", "so", "grab", "pair"):
            trace = sgd_run(order, seed, x, y, fstar, lam=lam, lr=lr, batch=batch, epochs=epochs)
            row[order] = float(np.mean(trace[-plateau:]))
        row["rr/grab"] = row["rr"] / row["grab"]
        rows.append(row)
        print("  seed {seed}: rr {rr:.3e}  so {so:.3e}  grab {grab:.3e}  pair {pair:.3e}  "
              "rr/grab {rr/grab:.2f}".format(**row))
    wins = sum(r["grab"] < r["rr"] for r in rows)
    print(f"  GraB below RR on {wins}/{seeds} seeds; median rr/grab = "
          f"{statistics.median(r['rr/grab'] for r in rows):.2f}")
    return {"fstar": fstar, "rows": rows, "grab_wins": wins}


# ----------------------------------------------------------------------------- part 2
class SmallCNN(nn.Module):
    """Conv-BN-ReLU blocks with max pooling and a global max pool (a lesion detector)."""

    def __init__(self) -> None:
        super().__init__()
        chans = [1, 16, 32, 64, 64]
        for i in range(4):
            self.add_module(f"conv{i + 1}", nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False))
            self.add_module(f"bn{i + 1}", nn.BatchNorm2d(chans[i + 1]))
        self.head = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 5):
            x = torch.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            if i < 3:
                x = nn.functional.max_pool2d(x, 2)
        return self.head(x.amax((2, 3))).squeeze(1)


def cxr_data(n_train: int, n_val: int, size: int) -> tuple[torch.Tensor, ...]:
    from medbench.data.synthetic import make_cxr

    xtr, mtr = make_cxr(n_train, size=size, seed=0)
    xva, mva = make_cxr(n_val, size=size, seed=1)
    return (torch.tensor(xtr)[:, None], torch.tensor(mtr["label"].to_numpy()).float(),
            torch.tensor(xva)[:, None], torch.tensor(mva["label"].to_numpy()).float())


class CnnRun:
    """One training run, advanced an epoch at a time so that variants can be interleaved."""

    def __init__(self, order: str, opts: dict[str, Any], n: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = SmallCNN()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.sampler = ORDERINGS.create(order, dataset_size=n, seed=seed, **opts)
        self.epoch, self.times, self.losses = 0, [], []

    def run_epoch(self, xtr: torch.Tensor, ytr: torch.Tensor, batch: int) -> None:
        self.model.train()
        self.sampler.set_epoch(self.epoch)
        t0 = time.perf_counter()
        total = 0.0
        order_now = list(self.sampler)
        for k in range(0, len(order_now), batch):
            idx = torch.tensor(order_now[k : k + batch])
            xb, yb = xtr[idx], ytr[idx]
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(xb), yb)
            loss.backward()
            if hasattr(self.sampler, "observe"):
                self.sampler.observe(self.model, self.loss_fn, xb, yb, idx)
            self.opt.step()
            total += float(loss.detach()) * len(idx)
        if hasattr(self.sampler, "end_epoch"):
            self.sampler.end_epoch()
        self.times.append(time.perf_counter() - t0)
        self.losses.append(total / len(ytr))
        self.epoch += 1

    def val_auc(self, xva: torch.Tensor, yva: torch.Tensor) -> float:
        from sklearn.metrics import roc_auc_score

        self.model.eval()
        with torch.no_grad():
            score = torch.cat([self.model(xva[k : k + 256]) for k in range(0, len(yva), 256)])
        return float(roc_auc_score(yva.numpy(), score.numpy()))


CXR_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {  # defaults: method "auto" (tap conv/linear),
    "rr": ("rr", {}),                                     # conv_proj 8, count-sketch to 1024
    "grab (tap, sketch 1024)": ("grab", {"conv_proj": None}),
    "grab (tap, conv_proj 8, sketch 1024)": ("grab", {}),
    "pair (tap, conv_proj 8, sketch 1024)": ("pair", {}),
    "grab (tap conv4+head, sketch 1024)": ("grab", {"grad_params": ["conv4.*", "head.*"], "conv_proj": None}),
    "grab (vmap all params, sketch 1024)": ("grab", {"method": "vmap", "conv_proj": None}),
}


def run_cxr(epochs: int, n_train: int, n_val: int, size: int, batch: int, seeds: int = 1,
            variants: list[str] | None = None) -> dict[str, Any]:
    """Train every variant for ``epochs`` epochs per seed (variants interleaved per epoch).

    Per seed each variant starts from the same initialisation and its sampler gets the same seed;
    reported are the final-epoch training loss (mean over the epoch's minibatches) and validation
    AUC per seed, the median epoch time over all epochs and seeds with its ratio to RR's measured
    in the same run, and on how many seeds each variant ends with a lower training loss than RR.
    """
    torch.set_num_threads(1)
    xtr, ytr, xva, yva = cxr_data(n_train, n_val, size)
    n_params = sum(p.numel() for p in SmallCNN().parameters())
    names = variants or list(CXR_VARIANTS)
    if "rr" not in names:
        names = ["rr", *names]
    print(f"cxr: {n_train} train / {n_val} val images {size}x{size}, SmallCNN ({n_params} params, "
          f"BatchNorm), batch {batch}, {epochs} epochs, Adam 1e-3, {seeds} seed(s); variants "
          "interleaved per epoch", flush=True)
    per: dict[str, dict[str, list[float]]] = {n: {"loss": [], "auc": [], "times": []} for n in names}
    for seed in range(seeds):
        runs = {name: CnnRun(*CXR_VARIANTS[name], len(ytr), seed=seed) for name in names}
        for _ in range(epochs):
            for run in runs.values():
                run.run_epoch(xtr, ytr, batch)
        for name, run in runs.items():
            per[name]["loss"].append(run.losses[-1])
            per[name]["auc"].append(run.val_auc(xva, yva))
            per[name]["times"].extend(run.times)
        print(f"  seed {seed}: " + "  ".join(f"{n.split(' ')[0]} {per[n]['loss'][-1]:.4f}" for n in names),
              flush=True)
    base = statistics.median(per["rr"]["times"])
    out = {}
    for name in names:
        d = per[name]
        epoch_s = statistics.median(d["times"])
        wins = sum(a < b for a, b in zip(d["loss"], per["rr"]["loss"], strict=True))
        out[name] = {"train_loss": d["loss"], "val_auc": d["auc"], "epoch_s": epoch_s,
                     "vs_rr": epoch_s / base, "lower_loss_than_rr": wins, "seeds": seeds}
        print(f"  {name:38s} final train loss median {statistics.median(d['loss']):.4f}  "
              f"val AUC median {statistics.median(d['auc']):.4f}  epoch {epoch_s:.2f} s "
              f"({epoch_s / base:.2f}x RR)  lower loss than RR on {wins}/{seeds} seeds")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["digits", "cxr", "all"], default="all")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--plateau", type=int, default=20)
    ap.add_argument("--lam", type=float, default=1e-2)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cxr-epochs", type=int, default=8)
    ap.add_argument("--cxr-n", type=int, default=2000)
    ap.add_argument("--cxr-size", type=int, default=32)
    ap.add_argument("--cxr-seeds", type=int, default=1)
    ap.add_argument("--cxr-variants", default="", help="names of CXR_VARIANTS separated by ';' (default: all)")
    ap.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    if args.part in ("digits", "all"):
        results["digits"] = run_digits(args.seeds, args.epochs, args.plateau, args.lam, args.lr, args.batch)
    if args.part in ("cxr", "all"):
        variants = [v.strip() for v in args.cxr_variants.split(";") if v.strip()] or None
        results["cxr"] = run_cxr(args.cxr_epochs, args.cxr_n, args.cxr_n // 2, args.cxr_size, 32,
                                 seeds=args.cxr_seeds, variants=variants)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()

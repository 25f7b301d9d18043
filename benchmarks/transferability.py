"""Time every transferability metric on synthetic features (default N=5000, D=2048, C=10, CPU).

Each metric runs once on the first 200 samples before the timed runs (imports, lazy set-up).

Features are low-rank class structure plus noise, like pooled CNN features: a 64-dim latent
with class-dependent means mapped to D dims, plus isotropic noise; logits for LEEP/NCE come
from a fixed random head with 1000 source classes.

Usage:
    python benchmarks/transferability.py [--n 5000 --d 2048 --c 10] [--metrics logme,sfda]
        [--backends numpy,torch] [--device cpu] [--threads 0] [--lp-reference R]

``--lp-reference R`` also runs LP through scikit-learn's NCA (the authors' code path) and the
blockwise solver on R orders of the same samples. NCA's 50 L-BFGS iterations usually stop before
convergence, so the rounding, which the sample order changes, moves LP in the third decimal;
scikit-learn's own spread over the orders is the yardstick for the blockwise solver's values.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch


def make_features(n: int, d: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    latent = rng.standard_normal((n, 64)) + 0.3 * rng.standard_normal((c, 64))[y]
    x = latent @ rng.standard_normal((64, d)) / 8 + 0.5 * rng.standard_normal((n, d))
    logits = x @ rng.standard_normal((d, 1000)) / np.sqrt(d)
    return x, y, logits


def main() -> None:
    # this file is named like the package: keep its folder off the import path
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    from transferability.features import METRICS, compute_metric, list_metrics

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--c", type=int, default=10)
    ap.add_argument("--metrics", default="")
    ap.add_argument("--backends", default="numpy,torch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--lp-reference", type=int, default=0, metavar="R",
                    help="also compare LP through scikit-learn's NCA and the blockwise one on R sample orders")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y, logits = make_features(args.n, args.d, args.c)

    def backends_of(name: str) -> list[str]:
        return args.backends.split(",") if METRICS.get(name).torch else ["numpy"]
    names = args.metrics.split(",") if args.metrics else list_metrics()
    print(f"N={args.n} D={args.d} C={args.c} device={args.device} torch threads={torch.get_num_threads()}")
    print(f"load average at start: {os.getloadavg()[0]:.1f} (wall time stretches with other jobs; "
          "cpu_s = process CPU time over all threads)")
    # warm-up: one run per metric on 200 samples, so that one-time costs (imports such as
    # scikit-learn's neighbors module, ~0.9 s; lazy kernel set-up) are not charged to whichever
    # metric happens to need them first
    logging.disable(logging.WARNING)  # e.g. H-score's D >= N warning, true of 200 samples only
    for name in names:
        for backend in backends_of(name):
            compute_metric(name, x[:200], y[:200], logits=logits[:200], backend=backend, device=args.device)
    logging.disable(logging.NOTSET)
    print(f"{'metric':<12}{'backend':<8}{'wall_s':>10}{'cpu_s':>10}{'score':>16}")
    for name in names:
        for backend in backends_of(name):
            t0, c0 = time.perf_counter(), time.process_time()
            score = compute_metric(name, x, y, logits=logits, backend=backend, device=args.device)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            print(f"{name:<12}{backend:<8}{dt:>10.2f}{dc:>10.2f}{score:>16.6g}", flush=True)
    if args.lp_reference:
        lp_reference(x, y, args.lp_reference)


def lp_reference(x: np.ndarray, y: np.ndarray, repeats: int) -> None:
    """LP through scikit-learn's NCA and the blockwise one on the same row permutations.

    LP does not depend on the sample order, but the rounding of both fits does; the spread of
    scikit-learn's own LP over permutations is the yardstick for the blockwise solver's values.
    """
    from transferability.metrics.knn import lp

    rng = np.random.default_rng(0)
    rows = []
    for r in range(repeats):
        perm = rng.permutation(len(y)) if r else np.arange(len(y))
        t0 = time.perf_counter()
        sk = lp(x[perm], y[perm], solver="sklearn")
        t1 = time.perf_counter()
        bw = lp(x[perm], y[perm])
        t2 = time.perf_counter()
        rows.append((sk, bw))
        print(f"lp order {r}: scikit-learn {sk:.5f} ({t1 - t0:.1f} s)  blockwise {bw:.5f} ({t2 - t1:.1f} s)",
              flush=True)
    sk, bw = np.array(rows).T
    print(f"lp over {repeats} sample orders: scikit-learn {sk.mean():.5f} (SD {sk.std(ddof=1):.5f}), "
          f"blockwise {bw.mean():.5f} (SD {bw.std(ddof=1):.5f}); mean |blockwise - scikit-learn| on "
          f"the same order {np.abs(bw - sk).mean():.5f}")


if __name__ == "__main__":
    main()

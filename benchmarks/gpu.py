"""Benchmark: the engine's GPU data path, switch by switch, against a plain fp32 training loop.

Run:  .venv/bin/python benchmarks/gpu.py [--arch resnet18] [--size 224] [--batch-size 64] [--n 1024]
      [--epochs 2] [--sparse-features 4096] [--json out.json]

In one process it measures training images/s of

- a plain fp32 loop (pageable memory, blocking copies) and the same loop with pinned memory and
  non-blocking copies;
- ``medbench.train.engine.fit`` with every switch off (fp32), then AMP bf16, AMP fp16,
  channels-last, ``torch.compile`` one at a time, and all of them together (bf16);
- 2:4 semi-structured sparse inference (``medbench.train.sparsity.to_semi_structured``) against
  dense fp16 on large Linear layers, when CUDA supports it (compute capability 8.0+).

Engine rates use the last epoch only (the first one pays for cuDNN autotuning and compilation).
Without a CUDA GPU it says so and exits with status 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger("benchmarks.gpu")


def _data(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=g), torch.randint(0, 2, (n,), generator=g)


def _model(arch: str) -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, num_classes=2, in_chans=1)


def plain_loop(arch: str, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, *, pinned: bool) -> float:
    """Images/s of the last epoch of a minimal fp32 loop (optionally pinned + non-blocking)."""
    from torch.utils.data import DataLoader, TensorDataset

    dev = torch.device("cuda")
    model = _model(arch).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, pin_memory=pinned)
    rate = 0.0
    for _ in range(epochs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(dev, non_blocking=pinned), yb.to(dev, non_blocking=pinned)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        rate = len(x) / (time.perf_counter() - t0)
    return rate


def engine_rate(arch: str, x: torch.Tensor, y: torch.Tensor, batch: int, epochs: int, **switches: Any) -> float:
    """Images/s of the engine's last epoch with the given TrainConfig switches."""
    from medbench.train.engine import TrainConfig, fit

    items = [(x[i], int(y[i]), {"uid": str(i)}) for i in range(len(x))]
    cfg = TrainConfig(epochs=epochs, batch_size=batch, device="cuda", patience=None, progress=False,
                      deterministic=False, schedule="constant", **switches)
    with tempfile.TemporaryDirectory() as tmp:
        res = fit(_model(arch), items, None, cfg, Path(tmp) / "run")
    times = res.history["time_s"].tolist()
    last = times[-1] - (times[-2] if len(times) > 1 else 0.0)
    return len(items) / last if last > 0 else float("nan")


def sparse_inference(features: int = 4096, layers: int = 4, batch: int = 4096, reps: int = 50) -> dict[str, Any]:
    """Dense fp16 vs 2:4 semi-structured inference rate of an MLP (samples/s)."""
    from medbench.train.sparsity import semi_structured_supported, to_semi_structured

    if not semi_structured_supported():
        return {"supported": False}
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(features, features) for _ in range(layers)])
    with torch.no_grad():
        for mod in model:
            w = mod.weight.view(-1, 4)
            keep = w.abs().topk(2, dim=1).indices
            mask = torch.zeros_like(w, dtype=torch.bool).scatter_(1, keep, True)
            w.mul_(mask)
    x = torch.randn(batch, features, device="cuda", dtype=torch.float16)

    def rate(m: nn.Module) -> float:
        with torch.inference_mode():
            for _ in range(5):
                m(x)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                m(x)
            torch.cuda.synchronize()
        return batch * reps / (time.perf_counter() - t0)

    dense = model.to(device="cuda", dtype=torch.float16).eval()
    dense_rate = rate(dense)
    converted = to_semi_structured(dense)
    sparse_rate = rate(dense) if converted else float("nan")  # ``dense`` now holds the converted layers
    return {"supported": True, "layers_converted": len(converted), "dense_samples_per_s": dense_rate,
            "sparse_samples_per_s": sparse_rate, "speedup": sparse_rate / dense_rate}


def _write(path: Path | None, result: dict[str, Any]) -> None:
    """Write ``result`` as JSON to ``path`` (if given) through a temporary file, so it is never half-written."""
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n", type=int, default=1024, help="training images per epoch")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--sparse-features", type=int, default=4096, help="2:4 benchmark: Linear width")
    ap.add_argument("--sparse-layers", type=int, default=4, help="2:4 benchmark: Linear layers")
    ap.add_argument("--sparse-batch", type=int, default=4096, help="2:4 benchmark: samples per forward")
    ap.add_argument("--sparse-reps", type=int, default=50, help="2:4 benchmark: timed forwards")
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the results here (rewritten after every measured configuration)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if not torch.cuda.is_available():
        log.info("no CUDA GPU on this machine: the GPU benchmark needs one; nothing to measure")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False
    log.info("device: %s (torch %s)", torch.cuda.get_device_name(), torch.__version__)
    x, y = _data(args.n, args.size)
    run = (args.arch, x, y, args.batch_size, args.epochs)
    off = {"amp": "none", "channels_last": False, "compile": False}
    configs: list[tuple[str, Callable[[], float]]] = [
        ("plain loop fp32", lambda: plain_loop(*run, pinned=False)),
        ("plain loop fp32 + pinned/non_blocking", lambda: plain_loop(*run, pinned=True)),
        ("engine fp32 (all off)", lambda: engine_rate(*run, **off)),
        ("engine + amp bf16", lambda: engine_rate(*run, **{**off, "amp": "bf16"})),
        ("engine + amp fp16", lambda: engine_rate(*run, **{**off, "amp": "fp16"})),
        ("engine + channels_last", lambda: engine_rate(*run, **{**off, "channels_last": True})),
        ("engine + compile", lambda: engine_rate(*run, **{**off, "compile": True})),
        ("engine all on (bf16, channels_last, compile)",
         lambda: engine_rate(*run, amp="bf16", channels_last=True, compile=True)),
    ]
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                              "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                              "images_per_s": {}, "sparse": None}
    rows: list[tuple[str, float]] = []
    for name, measure in configs:
        rows.append((name, measure()))
        log.info("%s: %.1f images/s", name, rows[-1][1])
        result["images_per_s"] = dict(rows)
        _write(args.json, result)  # after every row: a run stopped by a time limit keeps its figures
    base = rows[0][1]
    width = max(len(name) for name, _ in rows)
    log.info("%s  %10s  %8s", "configuration".ljust(width), "images/s", "vs plain")
    for name, r in rows:
        log.info("%s  %10.1f  %7.2fx", name.ljust(width), r, r / base)
    sparse = sparse_inference(args.sparse_features, args.sparse_layers, args.sparse_batch, args.sparse_reps)
    if sparse["supported"]:
        log.info("2:4 semi-structured inference: %d layers, dense %.0f, sparse %.0f samples/s (%.2fx)",
                 sparse["layers_converted"], sparse["dense_samples_per_s"], sparse["sparse_samples_per_s"],
                 sparse["speedup"])
    else:
        log.info("2:4 semi-structured kernels need CUDA compute capability 8.0+: skipped")
    result["sparse"] = sparse
    _write(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

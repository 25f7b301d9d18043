"""Inference: logits over a dataset, the task loss, and the predictions table (Parquet + CSV)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medbench.train import dist
from medbench.train.batching import EvalDataset, collate_eval
from medbench.train.dist import amp_dtype, resolve_device
from medbench.train.optim import eval_mode
from medbench.utils.files import atomic_path

PREDICTIONS = "predictions.parquet"


class TaskLoss(nn.Module):
    """Mean loss of a classifier: cross-entropy for C >= 2 outputs, BCE-with-logits for 1 output.

    Works batched ``(B, C)`` and per example ``(C,)`` (e.g. under ``torch.func.vmap``).
    """

    def __init__(self, n_outputs: int, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.n_outputs = int(n_outputs)
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.n_outputs == 1:
            return F.binary_cross_entropy_with_logits(
                logits.float().reshape(targets.shape), targets.float()
            )
        return F.cross_entropy(logits.float(), targets.long(), label_smoothing=self.label_smoothing)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(N, C)``; a single-logit model gives ``(N, 1)`` = P(class 1)."""
    if logits.ndim == 1:
        logits = logits[:, None]
    if logits.shape[1] == 1:
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=1)


def autocast_ctx(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` when ``dtype`` is set, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Inference:
    """Raw outputs over a dataset, in dataset order."""

    logits: torch.Tensor
    labels: torch.Tensor
    uids: list[str]
    meta: list[dict[str, Any]] = field(default_factory=list)


@torch.no_grad()
def infer(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    dtype: torch.dtype | None = None,
    channels_last: bool = False,
    keep_meta: Sequence[str] = (),
    progress: bool = False,
    desc: str = "predict",
) -> Inference:
    """Run ``model`` in eval mode over ``dataset``; its train/eval mode is restored afterwards.

    Under torchrun (whenever a process group of several ranks is up) each rank runs a
    ``DistributedSampler`` shard and the ``(index, outputs)`` of all ranks are gathered and
    de-duplicated by dataset index (the sampler pads with repeats), so every rank returns the
    whole dataset once, in dataset order. All ranks must then call it together.
    """
    dev = resolve_device(device)
    world = dist.world_size()
    eval_ds = EvalDataset(dataset, keep_meta)
    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(eval_ds, num_replicas=world, rank=dist.rank(), shuffle=False, drop_last=False)
    loader = DataLoader(
        eval_ds,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_eval,
        pin_memory=dev.type == "cuda",
        generator=torch.Generator(),  # the loader's base seed must not consume the global RNG
    )
    logits, labels, uids, metas = [], [], [], []
    with eval_mode(model):
        for x, y, uid, meta in tqdm(loader, desc=desc, disable=not progress, leave=False):
            x = x.to(dev, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast_ctx(dev, dtype):
                out = model(x)
            logits.append(out.float().reshape(len(x), -1).cpu())
            labels.append(y)
            uids.extend(uid)
            metas.extend(meta)
    if sampler is not None:
        return _gather(list(iter(sampler)), logits, labels, uids, metas)
    if not logits:
        return Inference(torch.empty(0, 1), torch.empty(0, dtype=torch.long), [], [])
    return Inference(torch.cat(logits), torch.cat(labels), uids, metas)


def _gather(indices: list[int], logits: list[torch.Tensor], labels: list[torch.Tensor], uids: list[str],
            metas: list[dict[str, Any]]) -> Inference:
    """All ranks' shard outputs, one row per dataset index (padding repeats dropped), index order."""
    local = (indices, torch.cat(logits) if logits else None, torch.cat(labels) if labels else None, uids, metas)
    seen: dict[int, tuple[torch.Tensor, torch.Tensor, str, dict[str, Any]]] = {}
    for idx, lg, lb, us, ms in dist.all_gather_object(local):
        for j, i in enumerate(idx):
            if i not in seen:
                seen[i] = (lg[j], lb[j], us[j], ms[j] if ms else {})
    if not seen:
        return Inference(torch.empty(0, 1), torch.empty(0, dtype=torch.long), [], [])
    order = sorted(seen)
    return Inference(
        torch.stack([seen[i][0] for i in order]), torch.stack([seen[i][1] for i in order]),
        [seen[i][2] for i in order], [seen[i][3] for i in order],
    )


def predictions_frame(inf: Inference, split: str) -> pd.DataFrame:
    """The predictions table: uid, split, label, prob (binary) or prob_<k> (multi-class), pred."""
    probs = probabilities(inf.logits).numpy() if len(inf.uids) else None
    df = pd.DataFrame({"uid": inf.uids, "split": split, "label": inf.labels.numpy()})
    if probs is not None:
        if probs.shape[1] <= 2:
            df["prob"] = probs[:, -1]
            df["pred"] = (probs[:, -1] >= 0.5).astype(int)
        else:
            for k in range(probs.shape[1]):
                df[f"prob_{k}"] = probs[:, k]
            df["pred"] = probs.argmax(axis=1)
    if inf.meta:
        meta = pd.DataFrame(inf.meta)
        for col in meta.columns:
            if col not in df.columns:
                df[col] = meta[col].to_numpy()
    return df


def predict(
    model: nn.Module,
    ds: Dataset,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    split: str = "test",
    num_workers: int = 0,
    amp: str = "none",
    keep_meta: Sequence[str] = (),
    progress: bool = False,
) -> pd.DataFrame:
    """Predict ``ds`` with ``model``: a DataFrame[uid, split, label, prob | prob_<k>..., pred, *keep_meta].

    Args:
        model: A classifier taking ``(B, C, H, W)`` images in [0, 1] (moved to ``device``).
        ds: Dataset of ``(image, label[, meta])`` items; ``meta["uid"]`` names the row.
        batch_size: Images per forward pass.
        device: "cpu", "cuda", "auto", ...
        split: Value of the ``split`` column.
        num_workers: DataLoader workers.
        amp: Mixed precision on CUDA ("auto", "bf16", "fp16", "none").
        keep_meta: Meta keys copied into extra columns (e.g. "sex", "vendor" for subgroups).
        progress: Show a progress bar.
    """
    dev = resolve_device(device)
    model.to(dev)
    inf = infer(
        model, ds, batch_size=batch_size, device=dev, num_workers=num_workers,
        dtype=amp_dtype(amp, dev), keep_meta=keep_meta, progress=progress, desc=f"predict {split}",
    )
    return predictions_frame(inf, split)


def save_predictions(df: pd.DataFrame, out_dir: str | Path) -> Path:
    """Write ``predictions.parquet`` and ``predictions.csv`` into ``out_dir`` atomically."""
    out = Path(out_dir)
    with atomic_path(out / PREDICTIONS) as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(out / "predictions.csv") as tmp:
        df.to_csv(tmp, index=False)
    return out / PREDICTIONS

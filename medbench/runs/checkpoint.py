"""The one checkpoint writer and reader of medbench: atomic ``torch.save``, safe ``torch.load``.

Every loop that checkpoints (the training engine, the CT denoiser loop, GDCE) and the source
weights export (:mod:`medbench.sources.checkpoint`) go through these two functions, so a killed
process never leaves a torn file and no checkpoint is ever unpickled as code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from medbench.errors import InputError
from medbench.utils.files import atomic_path

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """``torch.save`` ``state`` to a temporary file next to ``path``, then rename it onto ``path``.

    The one checkpoint writer of medbench (the engine, the CT denoiser and GDCE loops, source
    weights): a killed process leaves either the old file or the new one, never a torn file.
    ``state`` should hold only tensors, numbers, strings and containers of them, so that
    :func:`load_checkpoint` can read it without unpickling code.
    """
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], *, fix: str | None = None) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` without unpickling arbitrary objects.

    Args:
        path: The file.
        fix: What the user should do about a missing or unreadable file (e.g. "re-run
            `medbench denoise train`"); default: delete it (or the run folder) to start over.

    Raises:
        InputError: the file is missing, unreadable or not a dict.
    """
    p = Path(path)
    fix = fix or "delete it (or the run folder) to start over"
    if not p.is_file():
        raise InputError(f"checkpoint {p} does not exist: {fix}")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "unusable checkpoint"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, pickle.UnpicklingError) or first.startswith("Weights only load failed"):
            # torch's message here suggests weights_only=False, which would run code from the file
            reason = "not a weights-only PyTorch checkpoint: corrupt, truncated, or holding objects medbench will not unpickle"
        else:
            reason = first[:200]
        raise InputError(f"checkpoint {p} cannot be read ({reason}): {fix}") from exc
    if not isinstance(state, dict):
        raise InputError(f"{p} is not a medbench checkpoint: {fix}")
    return state

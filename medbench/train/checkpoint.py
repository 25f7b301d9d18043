"""Resumable checkpoints: atomic writes, safe loads (``weights_only=True``) and RNG state capture."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medbench.errors import InputError
from medbench.utils.files import atomic_path

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """``torch.save`` ``state`` to a temporary file next to ``path``, then rename it onto ``path``."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` without unpickling arbitrary objects.

    Raises:
        InputError: the file is unreadable or not a medbench checkpoint.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "unusable checkpoint"
        raise InputError(
            f"cannot read checkpoint {path}: {exc}; delete it (or the run folder) to start over"
        ) from exc
    if not isinstance(state, dict):
        raise InputError(f"{path} is not a medbench checkpoint; delete it to start over")
    return state


def capture_rng() -> dict[str, Any]:
    """The global RNG states (torch CPU/CUDA, numpy, random) as weights-only-loadable objects."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [list(random.getstate()[1]), random.getstate()[0]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`capture_rng` (missing parts are left alone)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state(
            ("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached_gaussian"])
        )
    if "python" in state:
        internal, version = state["python"]
        random.setstate((version, tuple(internal), None))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except RuntimeError:  # a different GPU count than when saved
            logger.warning("could not restore CUDA RNG state (GPU count changed); continuing")

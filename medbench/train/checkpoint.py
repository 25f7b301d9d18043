"""Resumable training checkpoints: the shared atomic save / safe load, and RNG state capture.

:func:`save_checkpoint` and :func:`load_checkpoint` are those of :mod:`medbench.runs.checkpoint`
(re-exported: one implementation for the engine, the CT denoiser and GDCE loops and source weights).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

from medbench.runs.checkpoint import load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"

__all__ = ["BEST", "LAST", "capture_rng", "load_checkpoint", "restore_rng", "save_checkpoint"]


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

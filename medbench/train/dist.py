"""Device and process-rank handling for the engine, kept in one place so DDP can be added here.

Without ``torch.distributed`` initialised everything reports a single process of rank 0.
"""

from __future__ import annotations

import torch

from medbench.errors import InputError


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return torch.distributed.get_rank() if _dist_ready() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return torch.distributed.get_world_size() if _dist_ready() else 1


def is_main() -> bool:
    """True on the process that writes files (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for all processes (no-op for a single process)."""
    if _dist_ready():
        torch.distributed.barrier()


def resolve_device(name: str | torch.device | None) -> torch.device:
    """Turn ``"auto"``/``None``/``"cpu"``/``"cuda"``/``"cuda:1"``/``"mps"`` into a usable device.

    Raises:
        InputError: a CUDA/MPS device was asked for but is not available.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"device {name!r} is not valid: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for but CUDA is not available: use --device cpu")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"device {name!r} was asked for but MPS is not available: use --device cpu")
    return dev


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` ("auto", "bf16", "fp16", "none") on ``device``; None = off.

    Mixed precision is a CUDA feature here: on CPU every setting turns into a no-op.
    """
    if device.type != "cuda" or amp == "none":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    # auto
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

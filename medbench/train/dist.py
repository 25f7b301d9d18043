"""Device and process-rank handling for the engine: single process or torchrun/DDP.

Without ``torch.distributed`` initialised everything reports a single process of rank 0. Under
``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment) :func:`init_from_env`
starts the process group (NCCL on CUDA, gloo on CPU) and picks ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch
from torch.utils.data import Sampler

from medbench.errors import InputError

logger = logging.getLogger(__name__)


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


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise InputError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from exc


def local_rank() -> int:
    """``LOCAL_RANK`` set by torchrun (0 when absent)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device: str | torch.device | None = "auto") -> torch.device:
    """Start the process group when launched by torchrun with WORLD_SIZE > 1; return this rank's device.

    Idempotent: an existing process group is kept. Single-process runs only resolve ``device``.

    Raises:
        InputError: the environment is incomplete (RANK/MASTER_ADDR missing) or asks for CUDA
            without GPUs.
    """
    ws = env_world_size()
    if ws <= 1 and not _dist_ready():
        return resolve_device(device)
    name = device if isinstance(device, str) or device is None else str(device)
    name = (name or "auto").strip().lower()
    use_cuda = torch.cuda.is_available() and name != "cpu" and not name.startswith("mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r} was asked for but CUDA is not available: use --device cpu")
    if use_cuda:
        dev = torch.device("cuda", local_rank() % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not _dist_ready():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise InputError(f"WORLD_SIZE={ws} but {missing} are not set: launch with torchrun "
                             "(torchrun --nproc_per_node N -m medbench.cli train ...)")
        backend = "nccl" if use_cuda else "gloo"
        timeout = timedelta(seconds=float(os.environ.get("MEDBENCH_DIST_TIMEOUT", "1800")))
        torch.distributed.init_process_group(backend=backend, timeout=timeout)
        atexit.register(_destroy_at_exit)
        logger.info("process group: backend %s, rank %d of %d, device %s", backend, rank(), world_size(), dev)
        if rank() != 0 and not os.environ.get("MEDBENCH_LOG_ALL_RANKS"):
            logging.getLogger().setLevel(logging.WARNING)  # one copy of the INFO log (rank 0)
            logging.getLogger("medbench").setLevel(logging.WARNING)
    return dev


def _destroy_at_exit() -> None:
    """Tear the process group down while the interpreter is still alive.

    A rank that leaves ``fit`` right after a collective (e.g. an exception caught by the caller,
    then exit 0) could abort with "terminate called without an active exception": gloo's worker
    thread drops the finished ``AsyncAllreduceWork`` (whose thread-local state holds a Python
    object) only after the waiting thread resumes, and if that happens during interpreter
    finalization the thread cannot take the GIL and is unwound through a noexcept destructor
    (core dump in CI, about 1 run in 10 under load). Sleeping briefly with the GIL released lets
    those threads finish first; then the group is destroyed.
    """
    if _dist_ready():
        time.sleep(0.2)
        try:
            torch.distributed.destroy_process_group()
        except Exception as exc:  # noqa: BLE001 - shutting down; never mask the real exit status
            logger.debug("destroy_process_group at exit failed: %s", exc)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` for a single process)."""
    if not _dist_ready() or world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float]) -> list[float]:
    """Elementwise sum of ``values`` over ranks (unchanged for a single process)."""
    if not _dist_ready() or world_size() == 1:
        return list(values)
    backend = torch.distributed.get_backend()
    dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=dev)
    torch.distributed.all_reduce(t)
    return t.cpu().tolist()


def shard_batches(order: list[int], batch_size: int, rank_: int, world: int) -> list[int]:
    """This rank's part of ``order`` when global batches of ``batch_size`` are split over ``world`` ranks.

    Global batch k is ``order[k*B:(k+1)*B]``; rank r takes its r-th equal slice, so one step of W
    ranks sees exactly the examples of one single-process step. A last partial batch whose size is
    not a multiple of W is padded with examples from the start of ``order`` (as DistributedSampler
    pads), so every rank runs the same number of steps.
    """
    out: list[int] = []
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        pad = -len(batch) % world
        batch = batch + [order[i % len(order)] for i in range(pad)]
        c = len(batch) // world
        out.extend(batch[rank_ * c : (rank_ + 1) * c])
    return out


class RankShardSampler(Sampler[int]):
    """Per-rank view of a single-process ordering ("rr", "so"): its permutation split by :func:`shard_batches`.

    All ranks build the same base permutation (it depends only on seed and epoch), so the shards
    are disjoint apart from the padding of a last partial batch. The sampler protocol
    (``set_epoch``, ``state_dict``, ...) is forwarded to the base ordering.
    """

    def __init__(self, base: Any, batch_size: int, rank_: int, world: int) -> None:
        if batch_size % world:
            raise InputError(f"batch_size={batch_size} must be a multiple of the world size {world} "
                             "(it is the global batch, split equally over the ranks)")
        self.base, self.batch_size, self.rank, self.world = base, int(batch_size), int(rank_), int(world)

    def __iter__(self) -> Iterator[int]:
        return iter(shard_batches(list(iter(self.base)), self.batch_size, self.rank, self.world))

    def __len__(self) -> int:
        n = len(self.base)
        full, last = divmod(n, self.batch_size)
        return full * (self.batch_size // self.world) + (-(-last // self.world) if last else 0)

    def __getattr__(self, name: str) -> Any:
        if name in ("set_epoch", "state_dict", "load_state_dict", "end_epoch"):
            return getattr(self.base, name)
        raise AttributeError(name)

    def summary(self) -> dict[str, Any]:
        out = dict(self.base.summary()) if hasattr(self.base, "summary") else {}
        out.update({"world_size": self.world, "sharding": "global batch split over ranks"})
        return out

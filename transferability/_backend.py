"""A tiny array namespace so the heavy metrics run one code path on numpy or torch (CPU/GPU).

Only the operations the metrics need, all in float64. ``get_backend("torch", device)`` runs the
linear algebra on ``device``; results come back as Python floats or numpy arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from transferability._validate import check_backend


class NumpyOps:
    """numpy float64 operations."""

    name = "numpy"

    def asarray(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    def mask(self, m: np.ndarray) -> np.ndarray:
        return np.asarray(m, dtype=bool)

    def index(self, i: np.ndarray) -> np.ndarray:
        return np.asarray(i, dtype=np.int64)

    def to_numpy(self, a: Any) -> np.ndarray:
        return np.asarray(a, dtype=np.float64)

    def eye(self, d: int) -> np.ndarray:
        return np.eye(d)

    def sum(self, a: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return np.sum(a, axis=axis, keepdims=keepdims)

    def mean(self, a: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return np.mean(a, axis=axis, keepdims=keepdims)

    def var(self, a: Any, axis: int = 0) -> Any:
        return np.var(a, axis=axis)

    def amax(self, a: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return np.max(a, axis=axis, keepdims=keepdims)

    def maximum(self, a: Any, v: float) -> Any:
        return np.maximum(a, v)

    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    sqrt = staticmethod(np.sqrt)
    diag = staticmethod(np.diag)
    trace = staticmethod(np.trace)

    def eigh(self, a: Any) -> tuple[Any, Any]:
        return np.linalg.eigh(a)

    def eigvalsh(self, a: Any) -> Any:
        return np.linalg.eigvalsh(a)

    def slogdet(self, a: Any) -> float:
        return float(np.linalg.slogdet(a)[1])

    def solve(self, a: Any, b: Any) -> Any:
        return np.linalg.solve(a, b)

    def pinv(self, a: Any, rcond: float) -> Any:
        return np.linalg.pinv(a, rcond=rcond, hermitian=True)

    def norm(self, a: Any) -> float:
        return float(np.linalg.norm(a))


class TorchOps:
    """torch float64 operations on one device."""

    name = "torch"

    def __init__(self, device: Any = None) -> None:
        self.device = torch.device(device or "cpu")

    def asarray(self, a: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=torch.float64, device=self.device)

    def mask(self, m: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(m, dtype=bool), device=self.device)

    def index(self, i: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(i, dtype=np.int64), device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        return a.detach().to("cpu", torch.float64).numpy() if isinstance(a, torch.Tensor) else np.asarray(a)

    def eye(self, d: int) -> torch.Tensor:
        return torch.eye(d, dtype=torch.float64, device=self.device)

    def sum(self, a: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return a.sum() if axis is None else a.sum(dim=axis, keepdim=keepdims)

    def mean(self, a: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return a.mean() if axis is None else a.mean(dim=axis, keepdim=keepdims)

    def var(self, a: Any, axis: int = 0) -> Any:
        return a.var(dim=axis, unbiased=False)

    def amax(self, a: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        return a.max() if axis is None else a.amax(dim=axis, keepdim=keepdims)

    def maximum(self, a: Any, v: float) -> Any:
        return torch.clamp_min(a, v)

    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    sqrt = staticmethod(torch.sqrt)
    diag = staticmethod(torch.diag)
    trace = staticmethod(torch.trace)

    def eigh(self, a: Any) -> tuple[Any, Any]:
        return torch.linalg.eigh(a)

    def eigvalsh(self, a: Any) -> Any:
        return torch.linalg.eigvalsh(a)

    def slogdet(self, a: Any) -> float:
        return float(torch.linalg.slogdet(a)[1])

    def solve(self, a: Any, b: Any) -> Any:
        return torch.linalg.solve(a, b)

    def pinv(self, a: Any, rcond: float) -> Any:
        return torch.linalg.pinv(a, rtol=rcond, hermitian=True)

    def norm(self, a: Any) -> float:
        return float(torch.linalg.vector_norm(a))


def get_backend(backend: str = "numpy", device: Any = None) -> NumpyOps | TorchOps:
    """Return the namespace for ``backend`` ("numpy" or "torch" on ``device``)."""
    check_backend(backend)
    return NumpyOps() if backend == "numpy" else TorchOps(device)

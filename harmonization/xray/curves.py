"""The GDCE intensity curve: ``x_{i+1} = x_i + a_i x_i (1 - x_i)`` iterated ``n`` times.

Each ``a_i`` is a global scalar per image in [-1, 1]. For such ``a`` every step is a monotone
map of [0, 1] onto itself (its derivative ``1 + a (1 - 2x)`` is >= 0) that keeps 0 and 1 fixed, so
the whole curve is monotone, fixes 0 and 1, and can never undo a vendor curve that moves the
end points (e.g. a sigmoid that compresses [0, 1] into [0.1, 0.9]).
"""

from __future__ import annotations

import numpy as np
import torch

from medbench.errors import InputError

N_ITERATIONS = 8


def apply_curve(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Apply the curve with per-image parameters.

    Args:
        x: Images in [0, 1], ``(B, C, H, W)`` (any trailing shape works).
        a: Parameters in [-1, 1], ``(B, n)``.

    Returns:
        The curved images, same shape as ``x``; differentiable in ``x`` and ``a``.
    """
    if a.ndim != 2 or a.shape[0] != x.shape[0]:
        raise InputError(f"curve parameters must be (B, n) with B={x.shape[0]}, got {tuple(a.shape)}")
    shape = (a.shape[0],) + (1,) * (x.ndim - 1)
    for i in range(a.shape[1]):
        ai = a[:, i].reshape(shape)
        x = x + ai * x * (1.0 - x)
    return x


def curve_values(a: torch.Tensor | np.ndarray, grid: int = 256) -> np.ndarray:
    """The curve of one parameter vector ``a`` (n,) sampled on ``grid`` points of [0, 1]."""
    a_t = torch.as_tensor(np.asarray(a, dtype=np.float64)).reshape(1, -1)
    x = torch.linspace(0.0, 1.0, grid, dtype=torch.float64).reshape(1, -1)
    return apply_curve(x, a_t).reshape(-1).numpy()


def is_monotone(a: torch.Tensor | np.ndarray, grid: int = 1025) -> bool:
    """True when the curve of ``a`` is non-decreasing on [0, 1] (always so for a in [-1, 1])."""
    return bool(np.all(np.diff(curve_values(a, grid)) >= -1e-12))


def fixed_points_error(a: torch.Tensor | np.ndarray) -> float:
    """max(|f(0) - 0|, |f(1) - 1|): zero for every parameter vector."""
    v = curve_values(a, grid=2)
    return float(max(abs(v[0]), abs(v[-1] - 1.0)))


def fit_curve_to_map(
    target_in: np.ndarray, target_out: np.ndarray, *, n: int = N_ITERATIONS, steps: int = 1500, lr: float = 0.05
) -> tuple[np.ndarray, float]:
    """Best curve parameters mapping ``target_in`` to ``target_out`` in least squares.

    Used to tell how well the family can represent a given intensity map at all (e.g. the
    inverse of a vendor curve), independent of any learning from images.

    Returns:
        ``(a, rmse)``.
    """
    xin = torch.as_tensor(np.asarray(target_in, dtype=np.float64)).reshape(1, -1)
    xout = torch.as_tensor(np.asarray(target_out, dtype=np.float64)).reshape(1, -1)
    best: tuple[np.ndarray, float] | None = None
    for init in (0.0, -0.5, 0.5):
        z = torch.full((1, n), init, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            loss = ((apply_curve(xin, torch.tanh(z)) - xout) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            rmse = float(((apply_curve(xin, torch.tanh(z)) - xout) ** 2).mean().sqrt())
        if best is None or rmse < best[1]:
            best = (torch.tanh(z).detach().reshape(-1).numpy(), rmse)
    assert best is not None
    return best

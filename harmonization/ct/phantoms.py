"""Ellipse phantoms in HU for low-dose CT experiments (body, organs, lungs, bone, lesions, an edge block).

Each volume is a stack of slices whose ellipses drift smoothly along z, so adjacent slices are
similar (the image-domain network uses 3 neighbours). A slanted rectangular block gives an edge
for the MTF check and a reserved flat region gives ROIs for noise SD/NPS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medbench.utils.rng import numpy_rng

Box = tuple[int, int, int, int]  # row0, col0, height, width


@dataclass
class PhantomInfo:
    """Where to measure: flat ROIs (noise) and an edge ROI (MTF) in pixel boxes."""

    flat_rois: list[Box] = field(default_factory=list)
    edge_roi: Box | None = None
    edge_angle_deg: float = 0.0


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float,
             theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    dy, dx = yy - cy, xx - cx
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _rect(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, hy: float, hx: float,
          theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    dy, dx = yy - cy, xx - cx
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return (np.abs(u) <= hx) & (np.abs(v) <= hy)


def _supersampled(fn, size: int, ss: int = 3):
    """Evaluate a mask function on an ``ss``-times finer grid and average (partial-volume edges)."""
    g = (np.arange(size * ss) + 0.5) / ss - 0.5
    yy, xx = np.meshgrid(g, g, indexing="ij")

    def area(*args: float) -> np.ndarray:
        m = fn(yy, xx, *args).astype(np.float32)
        return m.reshape(size, ss, size, ss).mean(axis=(1, 3))

    return area


def make_phantom_volume(n_slices: int = 8, *, size: int = 64, seed: int = 0, uid: object = 0,
                        texture_hu: float = 8.0, edge_hu: float = 400.0) -> tuple[np.ndarray, PhantomInfo]:
    """A ``(Z, size, size)`` float32 HU volume and its measurement ROIs.

    Args:
        n_slices: Slices along z.
        size: Image side in pixels (the body fills ~80% of the inscribed circle).
        seed: Base seed; ``uid`` picks the volume (random parameters from ``(seed, uid)``).
        texture_hu: Amplitude of a smooth soft-tissue texture (0 for piecewise-constant).
        edge_hu: HU of the slanted edge block (in 40 HU soft tissue).
    """
    rng = numpy_rng(seed, "ct-phantom", uid)
    ell = _supersampled(_ellipse, size)
    rect = _supersampled(_rect, size)
    s = size / 64.0
    c = (size - 1) / 2.0
    zs = np.linspace(-1.0, 1.0, n_slices) if n_slices > 1 else np.zeros(1)

    body_ry, body_rx = rng.uniform(19, 23) * s, rng.uniform(24, 28) * s
    body_t = rng.uniform(-0.15, 0.15)
    lung = [(c - 2 * s + rng.uniform(-2, 2) * s, c + sgn * rng.uniform(10, 13) * s,
             rng.uniform(8, 11) * s, rng.uniform(5, 7) * s, rng.uniform(-0.3, 0.3)) for sgn in (-1, 1)]
    has_lungs = rng.uniform() < 0.6
    organs = [(c + rng.uniform(-10, 10) * s, c + rng.uniform(-14, 14) * s, rng.uniform(2, 6) * s,
               rng.uniform(2, 7) * s, rng.uniform(0, np.pi), rng.uniform(-80, 120), rng.uniform(0.5, 1.5))
              for _ in range(rng.integers(3, 7))]
    spine = (c + rng.uniform(13, 15) * s, c + rng.uniform(-2, 2) * s, rng.uniform(3, 4) * s,
             rng.uniform(3, 4.5) * s, rng.uniform(600, 1000))
    edge_t = np.deg2rad(rng.uniform(3, 8)) * rng.choice([-1, 1])
    edge_c = (c - 9 * s, c + 2 * s)

    tex = np.zeros((size, size), np.float32)
    if texture_hu > 0:
        from scipy.ndimage import gaussian_filter

        t = gaussian_filter(rng.normal(size=(size, size)), 1.5 * s)
        tex = (texture_hu * t / (t.std() + 1e-8)).astype(np.float32)

    vol = np.empty((n_slices, size, size), np.float32)
    plain = np.empty_like(vol)  # without texture: tells where pure soft tissue is
    for i, z in enumerate(zs):
        img = np.full((size, size), -1000.0, np.float32)
        body = ell(c + 0.5 * z * s, c, body_ry * (1 - 0.03 * z * z), body_rx, body_t)
        inner = ell(c + 0.5 * z * s, c, body_ry - 2.0 * s, body_rx - 2.0 * s, body_t)
        img += body * (1000.0 - 100.0)  # fat shell -100 HU
        img += inner * 140.0  # soft tissue 40 HU
        img += inner * tex
        if has_lungs:
            for cy, cx, ry, rx, t in lung:
                img += ell(cy + z * s, cx, ry * (1 - 0.15 * z), rx, t) * (-840.0 - 0.0) * inner
        for cy, cx, ry, rx, t, hu, speed in organs:
            scale = max(0.0, 1.0 - (speed * z) ** 2 * 0.5)
            if scale > 0.2:
                img += ell(cy + speed * z * 2 * s, cx, ry * scale, rx * scale, t) * (hu - 40.0) * inner
        cy, cx, ry, rx, hu = spine
        img += ell(cy, cx + z * s, ry, rx, 0.0) * (hu - 40.0)
        pad = rect(edge_c[0] + 2.0 * s, edge_c[1], 8.0 * s, 13.0 * s, edge_t) * inner
        img = img * (1 - pad) + 40.0 * pad
        block = rect(edge_c[0], edge_c[1], 4.0 * s, 10.0 * s, edge_t)
        img = img * (1 - block) + edge_hu * block
        vol[i] = img
        plain[i] = img - inner * tex * (1 - pad) * (1 - block)

    # ROIs: edge box across the block's lower long side; flat boxes in the reserved soft tissue.
    h = max(8, int(round(10 * s)))
    w = max(8, int(round(16 * s)))
    edge_row = edge_c[0] + 4.0 * s
    info = PhantomInfo(
        flat_rois=[],
        edge_roi=(int(round(edge_row - h / 2)), int(round(edge_c[1] - w / 2)), h, w),
        edge_angle_deg=float(np.rad2deg(edge_t)),
    )
    for roi_size in (max(6, int(round(7 * s))), max(4, int(round(5 * s))), max(4, int(round(4 * s)))):
        info.flat_rois = _flat_rois(plain, exclude=info.edge_roi, size=roi_size)
        if len(info.flat_rois) >= 2:
            break
    return vol, info


def _flat_rois(plain: np.ndarray, *, exclude: Box | None, size: int, max_rois: int = 4,
               tol_hu: float = 0.5, margin: int = 2) -> list[Box]:
    """Boxes of one constant material in every (texture-free) slice, ``margin`` px from other materials.

    Soft-tissue boxes come first; other body materials (organs, lungs) fill up to ``max_rois``.
    """
    from scipy.ndimage import maximum_filter, minimum_filter

    win = size + 2 * margin
    hi = maximum_filter(plain.max(axis=0), size=win, mode="constant", cval=1e9)
    lo = minimum_filter(plain.min(axis=0), size=win, mode="constant", cval=-1e9)
    const = (hi - lo < tol_hu) & (lo > -950.0)  # centre pixels of constant, in-body windows
    taken = np.zeros(plain.shape[1:], bool)
    if exclude is not None:
        r, c, hh, ww = exclude
        taken[max(0, r - margin):r + hh + margin, max(0, c - margin):c + ww + margin] = True
    half = win // 2
    rois: list[Box] = []
    soft_first = sorted(zip(*np.nonzero(const)), key=lambda rc: (abs(lo[rc] - 40.0) > tol_hu, rc))
    for rc, cc in soft_first:
        r0, c0 = rc - half, cc - half  # window top-left
        if r0 < 0 or c0 < 0 or r0 + win > taken.shape[0] or c0 + win > taken.shape[1]:
            continue
        if taken[r0:r0 + win, c0:c0 + win].any():
            continue
        taken[r0:r0 + win, c0:c0 + win] = True
        rois.append((int(r0 + margin), int(c0 + margin), size, size))
        if len(rois) >= max_rois:
            break
    return rois


def make_phantom_set(n_volumes: int, n_slices: int = 8, *, size: int = 64, seed: int = 0,
                     **kw: float) -> list[tuple[np.ndarray, PhantomInfo]]:
    """``n_volumes`` phantom volumes with uids ``0..n_volumes-1`` under ``seed``."""
    return [make_phantom_volume(n_slices, size=size, seed=seed, uid=i, **kw) for i in range(n_volumes)]

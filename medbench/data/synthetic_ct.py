"""A small piecewise-constant CT torso phantom in Hounsfield units, deterministic from a seed.

Regions (``CT_LABELS``): air outside the body (-1000 HU), a subcutaneous fat layer (-100), soft
tissue (40), two lungs (-800) in the upper part of the volume, bone (+700: spine and ribs), and a
few low-contrast lesions inside soft tissue (soft tissue +/- 12..30 HU). Coordinates are
normalised: x, y in [-1, 1] across the slice, z in [-1, 1] across the stack (head at z = -1).
"""

from __future__ import annotations

import numpy as np

from medbench.errors import InputError
from medbench.utils.rng import numpy_rng

CT_LABELS: dict[str, int] = {"air": 0, "fat": 1, "soft": 2, "lung": 3, "bone": 4, "lesion": 5}
CT_HU: dict[str, float] = {"air": -1000.0, "fat": -100.0, "soft": 40.0, "lung": -800.0, "bone": 700.0}


def _coords(n_slices: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    z = (np.arange(n_slices, dtype=np.float32) + 0.5) / n_slices * 2.0 - 1.0
    return z[:, None, None], c[None, :, None], c[None, None, :]


def make_ct_phantom(
    n_slices: int,
    *,
    size: int = 128,
    seed: int = 0,
    n_lesions: int = 3,
    return_labels: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, list[dict[str, float]]]:
    """Render the phantom.

    Args:
        n_slices: Number of axial slices (>= 1).
        size: Slice height and width in pixels (>= 32).
        seed: Seed of the anatomy jitter and the lesion positions/contrasts.
        n_lesions: Number of low-contrast lesions placed inside soft tissue.
        return_labels: Also return the region label map (``CT_LABELS``) and the lesion list.

    Returns:
        HU volume ``(n_slices, size, size)`` float32; with ``return_labels``
        ``(hu, labels uint8, lesions)`` where each lesion is a dict (z, y, x, radius, rz, hu).
    """
    n_slices, size = int(n_slices), int(size)
    if n_slices < 1:
        raise InputError(f"n_slices must be >= 1 (got {n_slices})")
    if size < 32:
        raise InputError(f"size must be >= 32 pixels (got {size})")
    r = numpy_rng(seed, "ct-phantom")
    z, y, x = _coords(n_slices, size)
    bx, by = r.uniform(0.8, 0.88), r.uniform(0.56, 0.64)
    taper = np.sqrt(np.clip(1.0 - (z / 2.2) ** 2, 0.0, 1.0))
    body_d = (x / (bx * taper)) ** 2 + ((y - 0.02) / (by * taper)) ** 2
    inner_d = (x / ((bx - 0.07) * taper)) ** 2 + ((y - 0.02) / ((by - 0.07) * taper)) ** 2

    labels = np.zeros((n_slices, size, size), dtype=np.uint8)
    labels[np.broadcast_to(body_d <= 1.0, labels.shape)] = CT_LABELS["fat"]
    labels[np.broadcast_to(inner_d <= 1.0, labels.shape)] = CT_LABELS["soft"]

    # lungs: ellipsoids in the upper part of the stack
    lz0, lcz = r.uniform(-0.9, -0.7), r.uniform(1.15, 1.3)
    for s in (-1.0, 1.0):
        lx, ly = s * r.uniform(0.36, 0.42), r.uniform(-0.08, -0.02)
        ax, ay = r.uniform(0.24, 0.28), r.uniform(0.3, 0.36)
        d = ((x - lx) / ax) ** 2 + ((y - ly) / ay) ** 2 + ((z - lz0) / lcz) ** 2
        labels[(d <= 1.0) & (labels == CT_LABELS["soft"])] = CT_LABELS["lung"]

    # bone: vertebral body + ribs along the inner body contour
    spine = (x / 0.1) ** 2 + ((y - (by - 0.2)) / 0.09) ** 2
    labels[np.broadcast_to(spine <= 1.0, labels.shape) & (labels > 0)] = CT_LABELS["bone"]
    for ang in np.linspace(0.25 * np.pi, 1.75 * np.pi, 8):
        if abs(ang - np.pi) < 0.3:  # no rib at the sternum
            continue
        rx, ry = (bx - 0.1) * np.sin(ang), 0.02 + (by - 0.1) * np.cos(ang)
        rib = ((x - rx * taper) / 0.035) ** 2 + ((y - ry * taper) / 0.035) ** 2
        labels[(rib <= 1.0) & (labels > 0)] = CT_LABELS["bone"]

    hu = np.full(labels.shape, CT_HU["air"], dtype=np.float32)
    for name in ("fat", "soft", "lung", "bone"):
        hu[labels == CT_LABELS[name]] = CT_HU[name]

    lesions = _place_lesions(r, labels, n_lesions, z, y, x)
    for les in lesions:
        d = ((x - les["x"]) / les["radius"]) ** 2 + ((y - les["y"]) / les["radius"]) ** 2 + ((z - les["z"]) / les["rz"]) ** 2
        m = (d <= 1.0) & (labels == CT_LABELS["soft"])
        labels[m] = CT_LABELS["lesion"]
        hu[m] = np.float32(les["hu"])
    if return_labels:
        return hu, labels, lesions
    return hu


def _place_lesions(
    r: np.random.Generator, labels: np.ndarray, n: int, z: np.ndarray, y: np.ndarray, x: np.ndarray
) -> list[dict[str, float]]:
    """Rejection-sample lesion spheres lying wholly inside soft tissue."""
    out: list[dict[str, float]] = []
    soft = labels == CT_LABELS["soft"]
    n_slices = labels.shape[0]
    for _ in range(int(n)):
        contrast = r.uniform(12.0, 30.0) * (1.0 if r.random() < 0.6 else -1.0)
        for _try in range(200):
            cx, cy, cz = r.uniform(-0.6, 0.6), r.uniform(-0.45, 0.45), r.uniform(-0.9, 0.9)
            rad = r.uniform(0.05, 0.1)
            rz = max(0.3, 2.0 / n_slices)
            d = ((x - cx) / (rad * 1.3)) ** 2 + ((y - cy) / (rad * 1.3)) ** 2 + ((z - cz) / (rz * 1.3)) ** 2
            inside = d <= 1.0
            core = ((x - cx) / rad) ** 2 + ((y - cy) / rad) ** 2 + ((z - cz) / rz) ** 2 <= 1.0
            if core.any() and soft[inside].all():
                soft = soft & ~inside
                out.append({"z": float(cz), "y": float(cy), "x": float(cx), "radius": float(rad), "rz": float(rz), "hu": float(CT_HU["soft"] + contrast)})
                break
    return out

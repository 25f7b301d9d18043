"""Synthetic chest-radiograph-like images with a lesion whose presence is the label.

Every image is a function of ``(seed, uid)`` (and of its patient, itself a function of
``(seed, uid_prefix, patient index)``), so the same uid gives the same image whatever ``n`` or order.
Images are rendered "linear" (the reference look); the vendor's detector noise is then added to
that linear signal and the vendor's curve applied on top (``medbench.data.vendors``). Display convention: larger = brighter = more attenuation.

Patients: patient ``j`` owns 1-3 consecutive images (follow-ups) sharing anatomy, sex, age and the
label (a positive patient's lesion persists across its images), so patient grouping matters.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medbench.data.vendors import DEFAULT_VENDOR_MIX, apply_vendor_look, check_vendor
from medbench.errors import InputError
from medbench.utils.rng import numpy_rng

META_COLUMNS = ["uid", "patient_id", "label", "sex", "age", "vendor"]


@dataclass(frozen=True)
class CxrRecord:
    """Everything needed to render one image: its identity, metadata and patient anatomy."""

    uid: str
    patient_id: str
    label: int
    sex: str
    age: int
    vendor: str
    anatomy: dict[str, Any] = field(repr=False, compare=False)

    def meta(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in META_COLUMNS}


def _patient(seed: int, prefix: str, j: int, lesion_prob: float) -> dict[str, Any]:
    """Draw patient ``j``: image count, sex, age, label and anatomy (fixed draw order)."""
    r = numpy_rng(seed, prefix, "patient", j)
    count = int(r.choice([1, 2, 3], p=[0.6, 0.25, 0.15]))
    sex = "M" if r.random() < 0.5 else "F"
    age = int(np.clip(np.round(r.normal(55.0, 16.0)), 18, 90))
    label = int(r.random() < lesion_prob)
    male = sex == "M"
    side = 1.0 if r.random() < 0.5 else -1.0
    anatomy = {
        "body_ax": r.uniform(0.76, 0.86) + (0.04 if male else 0.0),
        "body_ay": r.uniform(1.0, 1.15),
        "body_cy": r.uniform(0.08, 0.16),
        "lung_ax": r.uniform(0.26, 0.32) + (0.015 if male else 0.0),
        "lung_ay": r.uniform(0.5, 0.6),
        "lung_cx": r.uniform(0.33, 0.39),
        "lung_cy": r.uniform(-0.12, -0.04),
        "lung_depth": r.uniform(0.27, 0.33),
        "heart_cx": r.uniform(0.06, 0.12),
        "heart_cy": r.uniform(0.24, 0.3),
        "heart_ax": r.uniform(0.24, 0.3),
        "heart_ay": r.uniform(0.19, 0.24),
        "rib_spacing": r.uniform(0.12, 0.145),
        "rib_curve": r.uniform(0.3, 0.45),
        "rib_y0": r.uniform(-0.72, -0.62),
        "bone": float(np.clip(1.15 - 0.005 * age, 0.6, 1.1)),
        "breast": (not male) * r.uniform(0.02, 0.05),
        # lesion (drawn for everybody so that the draw order never depends on the label)
        "lesion_kind": "nodule" if r.random() < 0.7 else "opacity",
        "lesion_side": side,
        "lesion_r": float(np.sqrt(r.random()) * 0.75),
        "lesion_theta": r.uniform(0.0, 2.0 * np.pi),
        "lesion_u": r.random(),
        "lesion_v": r.random(),
    }
    kind = anatomy["lesion_kind"]
    if kind == "nodule":
        anatomy["lesion_radius"] = anatomy["lesion_u"] * 0.04 + 0.08
        anatomy["lesion_amp"] = anatomy["lesion_v"] * 0.08 + 0.2
    else:
        anatomy["lesion_radius"] = anatomy["lesion_u"] * 0.08 + 0.14
        anatomy["lesion_amp"] = anatomy["lesion_v"] * 0.06 + 0.12
    return {"count": count, "sex": sex, "age": age, "label": label, "anatomy": anatomy}


def cxr_records(
    n: int,
    *,
    seed: int = 0,
    vendor: str | None = None,
    lesion_prob: float = 0.5,
    uid_prefix: str = "cxr",
    vendor_mix: dict[str, float] | None = None,
) -> list[CxrRecord]:
    """Metadata (and anatomy) of the first ``n`` images, without rendering any pixels."""
    if int(n) < 0:
        raise InputError(f"n must be >= 0 (got {n})")
    if not 0.0 <= float(lesion_prob) <= 1.0:
        raise InputError(f"lesion_prob must lie in [0, 1] (got {lesion_prob})")
    if vendor is not None:
        check_vendor(vendor)
    mix = dict(vendor_mix or DEFAULT_VENDOR_MIX)
    for name in mix:
        check_vendor(name)
    names = list(mix)
    probs = np.asarray([mix[k] for k in names], dtype=float)
    if probs.sum() <= 0 or (probs < 0).any():
        raise InputError("vendor_mix weights must be >= 0 and not all zero")
    probs = probs / probs.sum()
    out: list[CxrRecord] = []
    j = 0
    while len(out) < n:
        p = _patient(seed, uid_prefix, j, lesion_prob)
        pid = f"{uid_prefix}-p{j:05d}"
        for _ in range(p["count"]):
            if len(out) >= n:
                break
            uid = f"{uid_prefix}-{len(out):06d}"
            v = vendor or str(names[int(numpy_rng(seed, uid, "vendor").choice(len(names), p=probs))])
            out.append(CxrRecord(uid, pid, p["label"], p["sex"], p["age"], v, p["anatomy"]))
        j += 1
    return out


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    gy, gx = np.meshgrid(c, c, indexing="ij")
    gy.setflags(write=False)
    gx.setflags(write=False)
    return gy, gx


@functools.lru_cache(maxsize=8)
def _texture_filter(size: int) -> np.ndarray:
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fy**2 + fx**2) * 256.0 / 64.0  # cycles relative to a 64-px image
    filt = np.exp(-((f - 0.08) ** 2) / (2 * 0.05**2)) + 0.3 * np.exp(-(f**2) / (2 * 0.02**2))
    filt[0, 0] = 0.0
    filt = filt / np.sqrt((filt**2).sum() * 2.0 / (size * size))
    return filt.astype(np.float32)


def _soft(d: np.ndarray, edge: float) -> np.ndarray:
    """Soft indicator of ``d < 1`` with edge width ``edge``."""
    return 0.5 * (1.0 + np.tanh((1.0 - d) / edge))


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    return np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)


def render_cxr_linear(record: CxrRecord, *, size: int = 256, seed: int = 0) -> np.ndarray:
    """Render one image in the reference (linear) look, float32 ``(size, size)`` in [0, 1]."""
    a = record.anatomy
    r = numpy_rng(seed, record.uid, "image")
    shift_x, shift_y = r.uniform(-0.04, 0.04, size=2)
    scale = r.uniform(0.96, 1.04)
    gain = r.uniform(0.95, 1.05)
    gy, gx = _grid(size)
    x = (gx - np.float32(shift_x)) / np.float32(scale)
    y = (gy - np.float32(shift_y)) / np.float32(scale)
    edge = 0.03

    dbody = (np.abs(x / a["body_ax"]) ** 3 + np.abs((y - a["body_cy"]) / a["body_ay"]) ** 3) ** (1 / 3)
    body = _soft(dbody, edge)
    # lungs: ellipses widening towards the base
    lungs = np.zeros_like(x)
    widen = _widen(y, a)
    for s in (-1.0, 1.0):
        d = _ellipse(x / widen, y, s * a["lung_cx"], a["lung_cy"], a["lung_ax"], a["lung_ay"])
        lungs = np.maximum(lungs, _soft(d, edge))
    heart = _soft(_ellipse(x, y, a["heart_cx"], a["heart_cy"], a["heart_ax"], a["heart_ay"]), edge)
    lungs_eff = lungs * (1.0 - 0.8 * heart)
    spine = _soft(np.abs(x) / 0.07, 0.08) * body
    medi = _soft(np.abs(x) / 0.16, 0.15) * _soft(np.abs(y - 0.1) / 0.9, 0.1)

    # lung darkness graded: darker centrally, brighter towards base and apex
    depth = a["lung_depth"] * (1.0 - 0.25 * np.abs(y - a["lung_cy"]) / a["lung_ay"])
    img = 0.03 + 0.52 * body - depth * lungs_eff + 0.08 * medi + 0.06 * spine + 0.06 * heart * body

    # ribs: periodic bands along curved lines, inside the rib cage
    u = np.abs(x)
    phase = (y - a["rib_curve"] * u**2 - a["rib_y0"]) / a["rib_spacing"]
    ribs = (0.5 + 0.5 * np.cos(2.0 * np.pi * phase)) ** 3
    cage = _soft(_ellipse(x, y, 0.0, a["lung_cy"] + 0.02, 0.82, a["lung_ay"] + 0.05), 0.08)
    cage = cage * np.clip((phase + 0.5) * 2.0, 0.0, 1.0) * _soft(u / 0.85, 0.1)
    cage = cage * np.clip((u - 0.06) / 0.06, 0.0, 1.0)
    img = img + 0.06 * a["bone"] * ribs * cage
    # clavicles
    for s in (-1.0, 1.0):
        yc = -0.62 + 0.25 * (s * x - 0.1)
        band = np.exp(-(((y - yc) / 0.035) ** 2)) * _soft(np.abs(s * x - 0.32) / 0.26, 0.2)
        img = img + 0.08 * a["bone"] * band * body
    if a["breast"] > 0:
        for s in (-1.0, 1.0):
            img = img + a["breast"] * _soft(_ellipse(x, y, s * 0.42, 0.45, 0.3, 0.22), 0.2)

    # lung texture (band-limited noise), stronger inside lungs
    filt = _texture_filter(size)
    white = r.standard_normal((size, size), dtype=np.float32)
    tex = np.fft.irfft2(np.fft.rfft2(white) * filt, s=(size, size)).astype(np.float32)
    img = img + tex * (0.006 + 0.018 * lungs_eff)

    jitter = r.uniform(0.85, 1.15)  # drawn for every image so noise never depends on the label
    if record.label:
        img = img + _lesion(x, y, a, jitter, lungs)
    img = img * np.float32(gain)
    img = img + r.standard_normal((size, size), dtype=np.float32) * np.float32(0.008)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _widen(y: np.ndarray | float, a: dict[str, Any]) -> np.ndarray | float:
    """Horizontal stretch of the lungs at height ``y`` (0.8 at the apex, 1.2 at the base)."""
    return 0.8 + 0.2 * np.clip((y - a["lung_cy"]) / a["lung_ay"] + 1.0, 0.0, 2.0)


def lesion_center(a: dict[str, Any]) -> tuple[float, float]:
    """Lesion centre ``(x, y)`` in normalised coordinates, inside a lung and clear of the heart."""
    side = a["lesion_side"]
    theta = a["lesion_theta"]
    if side > 0:  # the heart side: keep to the upper half of the lung
        theta = np.pi + np.mod(theta, np.pi)
    cy = a["lung_cy"] + a["lesion_r"] * a["lung_ay"] * np.sin(theta)
    cx = (side * a["lung_cx"] + a["lesion_r"] * a["lung_ax"] * np.cos(theta)) * _widen(cy, a)
    return float(cx), float(cy)


def _lesion(x: np.ndarray, y: np.ndarray, a: dict[str, Any], jitter: float, lungs: np.ndarray) -> np.ndarray:
    cx, cy = lesion_center(a)
    rad = a["lesion_radius"]
    d2 = ((x - cx) ** 2 + (y - cy) ** 2) / (rad * rad)
    if a["lesion_kind"] == "nodule":
        blob = _soft(np.sqrt(d2), 0.25)
    else:
        blob = np.exp(-d2)
    return (a["lesion_amp"] * jitter) * blob * np.clip(lungs + 0.3, 0.0, 1.0)


def render_cxr(record: CxrRecord, *, size: int = 256, seed: int = 0, apply_vendor: bool = True) -> np.ndarray:
    """Render one image; with ``apply_vendor`` the detector noise and then the vendor curve are applied.

    The detector noise is drawn from ``(seed, uid)`` alone, so the same uid in two vendors' looks is
    the same exposure processed by two different curves.
    """
    lin = render_cxr_linear(record, size=size, seed=seed)
    if not apply_vendor:
        return lin
    return apply_vendor_look(lin, record.vendor, numpy_rng(seed, record.uid, "vendor-noise"))


def records_frame(records: list[CxrRecord]) -> pd.DataFrame:
    """Metadata DataFrame[uid, patient_id, label, sex, age, vendor] of ``records``."""
    df = pd.DataFrame([rec.meta() for rec in records], columns=META_COLUMNS)
    return df.astype({"label": "int64", "age": "int64"})


def make_cxr(
    n: int,
    *,
    size: int = 256,
    seed: int = 0,
    vendor: str | None = None,
    lesion_prob: float = 0.5,
    uid_prefix: str = "cxr",
    apply_vendor: bool = True,
    vendor_mix: dict[str, float] | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Synthetic chest radiographs in memory.

    Args:
        n: Number of images.
        size: Height and width in pixels (>= 16).
        seed: Base seed; image ``uid`` is drawn from ``(seed, uid)``.
        vendor: Force this Manufacturer (key of ``VENDORS``); ``None`` draws from the default mix.
        lesion_prob: Probability that a patient has the lesion (label 1).
        uid_prefix: Prefix of uids and patient ids (``{prefix}-000012``, ``{prefix}-p00007``).
        apply_vendor: ``False`` returns the linear reference look (no detector noise, no vendor curve).
        vendor_mix: Manufacturer -> weight used when ``vendor`` is None.

    Returns:
        ``(images (n, size, size) float32 in [0, 1], meta DataFrame[uid, patient_id, label, sex, age, vendor])``.
    """
    if int(size) < 16:
        raise InputError(f"size must be >= 16 pixels (got {size})")
    recs = cxr_records(n, seed=seed, vendor=vendor, lesion_prob=lesion_prob, uid_prefix=uid_prefix, vendor_mix=vendor_mix)
    images = np.empty((len(recs), int(size), int(size)), dtype=np.float32)
    for i, rec in enumerate(recs):
        images[i] = render_cxr(rec, size=int(size), seed=seed, apply_vendor=apply_vendor)
    return images, records_frame(recs)

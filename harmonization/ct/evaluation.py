"""Compare denoisers on simulated phantom volumes: PSNR/SSIM/RMSE, noise SD, MTF50; tables and figures."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harmonization.ct.denoisers import Denoiser, create_denoiser, tune
from harmonization.ct.phantoms import PhantomInfo, make_phantom_volume
from harmonization.ct.quality import SOFT_TISSUE, edge_mtf, image_quality
from harmonization.ct.simulate import Geometry, LowDoseResult, simulate_low_dose

log = logging.getLogger(__name__)


@dataclass
class Case:
    """One evaluation volume: its simulation and where to measure."""

    name: str
    sim: LowDoseResult
    info: PhantomInfo


def make_cases(n_volumes: int, n_slices: int = 8, *, size: int = 64, n0: float = 2.5e4,
               geometry: Geometry = Geometry(), seed: int = 0, split: str = "test") -> list[Case]:
    """Phantom volumes of ``split`` (disjoint from training's ``"train"``) simulated at ``n0``."""
    cases = []
    for i in range(n_volumes):
        uid = f"{split}-{i}"
        vol, info = make_phantom_volume(n_slices, size=size, seed=seed, uid=uid)
        cases.append(Case(uid, simulate_low_dose(vol, n0=n0, geometry=geometry, seed=seed, uid=uid), info))
    return cases


def measure(out: np.ndarray, case: Case, *, window: tuple[float, float] = SOFT_TISSUE) -> dict[str, float]:
    """Metrics of a denoised volume against the noise-free full-dose FBP of ``case``.

    ``mtf50`` is from the slice-averaged edge ROI (cycles/mm); ``mtf50_ratio`` relative to the
    full-dose FBP's; ``noise_sd`` is NaN with a ``noise_sd_note`` when there is no flat ROI.
    """
    ref, px = case.sim.fd_hu, case.sim.geometry.pixel_mm
    r, c, h, w = case.info.edge_roi  # type: ignore[misc]
    q = image_quality(out, ref, window=window, flat_rois=case.info.flat_rois, edge_roi=case.info.edge_roi,
                      pixel_mm=px)
    m_ref = edge_mtf(ref[:, r:r + h, c:c + w], pixel_mm=px).mtf50
    row = {k: q[k] for k in ("psnr", "ssim", "rmse", "mtf50")}
    row["mtf50_ratio"] = q["mtf50"] / m_ref
    row["noise_sd"] = q["noise_sd"]  # NaN when the phantom has no flat ROI
    if not case.info.flat_rois:
        row["noise_sd_note"] = "no flat ROI in this phantom"
    return row


def tune_classical(names: Sequence[str], val: Sequence[Case], *,
                   window: tuple[float, float] = SOFT_TISSUE) -> dict[str, Denoiser]:
    """Each classical denoiser at the strength maximising PSNR on the validation cases."""
    ld = np.concatenate([c.sim.ld_hu for c in val])
    fd = np.concatenate([c.sim.fd_hu for c in val])
    tuned = {}
    for name in names:
        # BM3D's noise spectrum follows the FBP filter the validation data were reconstructed with
        fixed = {"filter_name": val[0].sim.geometry.filter_name} if name == "bm3d" else {}
        best, _ = tune(name, ld, fd, window=window, fixed=fixed)
        tuned[name] = create_denoiser(name, **best, **fixed)
    return tuned


def compare(denoisers: Mapping[str, Denoiser], cases: Sequence[Case], *,
            window: tuple[float, float] = SOFT_TISSUE,
            outputs: MutableMapping[tuple[str, str], np.ndarray] | None = None) -> pd.DataFrame:
    """One row per (case, denoiser) with all metrics and the run time; learned models get sinograms.

    ``outputs``, when given, is filled with the denoised volumes by ``(case name, denoiser label)``.
    """
    rows = []
    for case in cases:
        for label, den in denoisers.items():
            t0 = time.perf_counter()
            out = den(case.sim.ld_hu, sinograms=case.sim.sino_ld, n0=case.sim.n0,
                      pixel_mm=case.sim.geometry.pixel_mm)
            dt = time.perf_counter() - t0
            if outputs is not None:
                outputs[(case.name, label)] = out
            rows.append({"case": case.name, "denoiser": label, **measure(out, case, window=window),
                         "seconds": dt})
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean of each metric per denoiser (in the order first seen)."""
    order = list(dict.fromkeys(table["denoiser"]))
    num = table.drop(columns=["case"]).groupby("denoiser").mean(numeric_only=True)
    return num.loc[order].reset_index()


def comparison_figure(images: Mapping[str, np.ndarray], ref: np.ndarray, *,
                      window: tuple[float, float] = SOFT_TISSUE, diff_range: float = 100.0):
    """Side-by-side slices (top) and differences to ``ref`` (bottom) as a matplotlib figure."""
    import matplotlib.pyplot as plt

    names = ["reference", *images]
    fig, axes = plt.subplots(2, len(names), figsize=(2.4 * len(names), 5.0), squeeze=False)
    for j, name in enumerate(names):
        img = ref if name == "reference" else images[name]
        axes[0, j].imshow(img, cmap="gray", vmin=window[0], vmax=window[1])
        axes[0, j].set_title(name, fontsize=9)
        axes[1, j].imshow(img - ref, cmap="RdBu_r", vmin=-diff_range, vmax=diff_range)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1, 0].set_ylabel(f"difference (+/-{diff_range:g} HU)", fontsize=8)
    fig.tight_layout()
    return fig

"""The frequency bands are defined once (medbench.data.bands) and both plugins use that object."""

from __future__ import annotations

import numpy as np
import pytest

from medbench.data.bands import BANDS


def test_both_packages_use_the_same_band_table() -> None:
    import confounders.frequency
    import confounders.synthetic
    import transferability.spectral

    assert confounders.frequency.BANDS is BANDS
    assert confounders.synthetic.BANDS is BANDS
    assert transferability.spectral.BANDS is BANDS
    assert list(BANDS) == ["low", "mid", "high"]
    with pytest.raises(TypeError):
        BANDS["mid"] = (0.0, 0.1)  # type: ignore[index]


def _ring_share(pattern: np.ndarray, lo: float, hi: float) -> float:
    """Share of the pattern's power at radial frequency (cycles/pixel) in [lo, hi], from the FFT."""
    n = pattern.shape[-1]
    f = np.fft.fftfreq(n)
    r = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    p = np.abs(np.fft.fft2(pattern - pattern.mean())) ** 2
    return float(p[(r >= lo - 1e-9) & (r <= hi + 1e-9)].sum() / p.sum())


@pytest.mark.parametrize("band", ["low", "mid", "high"])
def test_a_named_band_covers_the_same_frequencies_in_both_packages(band: str) -> None:
    from confounders import create_confounder
    from transferability.spectral import band_limited_pattern

    n = 64
    lo, hi = BANDS[band]
    shortcut = band_limited_pattern(n, band, seed=0)
    conf = create_confounder("freq-pattern", band=band, amplitude=0.1)
    injected = conf.apply_numpy(np.full((1, n, n), 0.5, np.float32), ["a"])[0].astype(np.float64) - 0.5
    assert _ring_share(shortcut, lo, hi) > 1 - 1e-9
    assert _ring_share(injected, lo, hi) > 1 - 1e-6  # float32 pattern: rounding leaks ~1e-8

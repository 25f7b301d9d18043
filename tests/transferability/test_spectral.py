"""Radial spectra, gradient spectra, alignment and the frequency-shortcut experiment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medbench.errors import InputError
from transferability.spectral import (
    BANDS,
    artifact_spectrum,
    band_limited_pattern,
    input_gradient_spectrum,
    input_gradients,
    plot_spectra,
    power_spectrum_2d,
    radial_psd,
    spectral_alignment,
    weight_gradient_spectrum,
)


def test_radial_psd_peaks_at_the_frequency_of_a_cosine() -> None:
    n = 64
    yy, xx = np.mgrid[:n, :n]
    for k in (3, 10, 25):
        img = np.cos(2 * np.pi * k * xx / n)
        s = radial_psd(img)
        assert s.freqs[np.argmax(s.power)] == pytest.approx(k / n)
        assert len(s.freqs) == n // 2 + 1 and s.freqs[-1] == 0.5


def test_power_spectrum_obeys_parseval() -> None:
    x = np.random.default_rng(0).standard_normal((3, 20, 24))
    assert power_spectrum_2d(x).sum() == pytest.approx(np.mean(np.sum(x**2, axis=(1, 2))), rel=1e-10)


@pytest.mark.parametrize("band", list(BANDS))
def test_band_pattern_energy_lies_in_its_band(band: str) -> None:
    p = band_limited_pattern(64, band, seed=1)
    assert np.abs(p).max() == pytest.approx(1.0)
    np.testing.assert_array_equal(p, band_limited_pattern(64, band, seed=1))
    s = radial_psd(p)
    lo, hi = BANDS[band]
    inside = (s.freqs >= lo - 1 / 64) & (s.freqs <= hi + 1 / 64)
    assert s.normalised()[inside].sum() > 0.99


def test_alignment_is_one_for_same_shape_and_small_across_bands() -> None:
    low, high = (radial_psd(band_limited_pattern(64, b)) for b in ("low", "high"))
    assert spectral_alignment(low, low) == pytest.approx(1.0)
    assert spectral_alignment(low, high) < 0.05
    assert spectral_alignment(low, high) == pytest.approx(spectral_alignment(high, low))
    # a different image size is put on the same frequency grid
    low32 = radial_psd(band_limited_pattern(128, "low"))
    assert spectral_alignment(low, low32) > 0.8


def test_artifact_spectrum_of_confounded_minus_clean() -> None:
    rng = np.random.default_rng(0)
    clean = rng.random((4, 32, 32))
    pat = band_limited_pattern(32, "mid")
    s = artifact_spectrum(clean + 0.1 * pat, clean)
    np.testing.assert_allclose(s.power, radial_psd(0.1 * pat).power, rtol=1e-9, atol=1e-15)
    with pytest.raises(InputError):
        artifact_spectrum(clean, clean[:, :16])


def test_input_gradients_of_a_linear_softmax_model_match_the_closed_form() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, 3)).double()
    x = torch.rand(5, 2, 8, 8, dtype=torch.float64)
    y = np.array([0, 1, 2, 1, 0])
    g = input_gradients(model, x, y)
    w = model[1].weight.detach()
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
    delta = p - torch.nn.functional.one_hot(torch.as_tensor(y), 3).double()
    expected = (delta @ w).reshape(5, 2, 8, 8).sum(1).numpy()  # d CE / d x = W^T (p - onehot)
    np.testing.assert_allclose(g, expected, rtol=1e-10, atol=1e-14)


def test_gradient_spectra_pretrained_differ_from_random(lite0_pair) -> None:
    x = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y = np.arange(8) % 2
    spec = {name: input_gradient_spectrum(m, x, y, objective="norm") for name, m in lite0_pair.items()}
    for s in spec.values():
        assert np.all(np.isfinite(s.power)) and s.power[1:].sum() > 0
    assert spectral_alignment(spec["pretrained"], spec["random"]) < 0.99
    assert abs(spec["pretrained"].centroid() - spec["random"].centroid()) > 0.005
    w = {name: weight_gradient_spectrum(m, x, y, objective="norm", pad=16) for name, m in lite0_pair.items()}
    assert len(w["random"].freqs) == 9
    assert not np.allclose(w["pretrained"].normalised(), w["random"].normalised(), rtol=0.05)
    fig = plot_spectra({**spec, "low band": radial_psd(band_limited_pattern(32, "low"))}, title="lite0")
    assert len(fig.axes[0].lines) == 3


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


@pytest.mark.slow
def test_frequency_shortcut_experiment_detects_the_shortcut() -> None:
    from transferability.shortcut import frequency_shortcut_experiment

    kw = dict(bands=("low", "high"), n_train=64, n_test=48, size=32, epochs=5, amplitudes=(0.5,), lr=1e-2,
              loss_threshold=0.66, seeds=(0,))
    res = frequency_shortcut_experiment({"tiny": _tiny}, **kw)
    t = res.table.set_index("band")
    assert list(t.index) == ["low", "high"]
    assert len(res.curves) == 2 * 5 * 4  # bands x epochs x steps per epoch
    # the pattern marks the positives: moving it to the negatives must hurt
    assert (t["auc_drop"] > 0.3).all()
    assert (t["ood_auc"] < 0.5).all()
    assert np.isfinite(t.loc["high", "steps_to_loss"])
    # training pulls the gradient spectrum towards the low-band pattern
    assert t.loc["low", "align_after"] > t.loc["low", "align_before"]
    assert set(res.spectra) == {("tiny", b, 0.5, 0, s) for b in ("low", "high") for s in ("before", "after")}
    # deterministic
    again = frequency_shortcut_experiment({"tiny": _tiny}, **kw)
    np.testing.assert_array_equal(again.table["iid_auc"], res.table["iid_auc"])


def test_shortcut_experiment_trains_through_the_engine(tmp_path) -> None:
    """Tiny case: the engine's run folder, the step curve against the engine's epoch losses, the
    known effect (the pattern marks the positives, so moving it to the negatives hurts), reload."""
    import pandas as pd

    from transferability.shortcut import frequency_shortcut_experiment

    kw = dict(bands=("high",), n_train=48, n_test=48, size=32, epochs=4, batch_size=16, amplitudes=(0.8,),
              lr=1e-2, loss_threshold=0.66, seeds=(0,), work_dir=tmp_path)
    res = frequency_shortcut_experiment({"tiny": _tiny}, **kw)
    (run,) = (tmp_path / "engine").glob("tiny__high__*")
    assert (run / "config.yaml").is_file() and not (run / "checkpoints").exists()  # recorded: weights dropped
    hist = pd.read_csv(run / "history.csv")
    curve = res.curves["loss"].to_numpy()
    assert len(curve) == 4 * 3 and len(hist) == 4  # epochs x steps of 16 over 48 images
    # the engine's epoch train_loss is the image-weighted mean of the step losses (equal batches here)
    np.testing.assert_allclose(hist["train_loss"], curve.reshape(4, 3).mean(1), rtol=1e-6)
    row = res.table.iloc[0]
    # AUCs on 48 images each (SE <= ~0.08 apiece). Seeds 0-4 gave drops 0.92, 1.0, 0.70, 0.33, 0.81.
    assert row["auc_drop"] > 0.25 and row["ood_auc"] < 0.5
    # a second call finds the finished run and reproduces the same curve and table from it
    again = frequency_shortcut_experiment({"tiny": _tiny}, **kw)
    np.testing.assert_array_equal(again.curves["loss"], curve)
    pd.testing.assert_frame_equal(again.table, res.table)
    # another amplitude is another unit, not a silent reload of this one
    frequency_shortcut_experiment({"tiny": _tiny}, **{**kw, "amplitudes": (0.7,)})
    assert len(list((tmp_path / "engine").glob("tiny__high__*"))) == 2
    # other training settings are refused, naming the restart flag
    with pytest.raises(InputError, match="--restart"):
        frequency_shortcut_experiment({"tiny": _tiny}, **{**kw, "epochs": 1})

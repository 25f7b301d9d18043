"""Behaviour of the synthetic injectors, checked against independent computations."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from confounders import taxonomy
from confounders.synthetic import CONFOUNDERS, PRESETS, create_confounder
from medbench.errors import InputError, UnknownNameError

ALL = CONFOUNDERS.names()


def _batch(b: int = 3, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.6 * torch.rand(b, 1, size, size, generator=g)
    return x, [f"img-{i}" for i in range(b)]


def test_registry_has_the_issue_injectors() -> None:
    for name in ["tag", "laterality", "text-block", "lowpass", "poisson", "gaussian", "freq-pattern",
                 "drain", "collimation", "vendor-curve", "jpeg"]:
        assert name in CONFOUNDERS
    assert {"paper-tag", "paper-lowpass", "paper-noise"} <= set(PRESETS)


@pytest.mark.parametrize("name", ALL)
def test_every_injector_contract(name: str) -> None:
    conf = create_confounder(name)
    assert taxonomy.validate_path(conf.miccat) == tuple(conf.miccat)
    x, uids = _batch()
    before = x.clone()
    out = conf(x, uids)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before), "input must not be modified"
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert float((out - x).abs().max()) > 1e-4, "the artifact must change the image"
    # deterministic across calls and independent of batch composition/order
    assert torch.equal(conf(x, uids), out)
    rev = conf(x.flip(0), uids[::-1]).flip(0)
    assert torch.allclose(rev, out, atol=1e-6)
    single = torch.cat([conf(x[i : i + 1], [u]) for i, u in enumerate(uids)])
    assert torch.allclose(single, out, atol=1e-6)
    # in place: same pixels, written into the given tensor
    buf = x.clone()
    assert conf(buf, uids, inplace=True) is buf and torch.allclose(buf, out, atol=1e-6)
    # numpy and dict-transform paths give the same pixels
    np_out = conf.apply_numpy(x[:, 0].numpy(), uids)
    assert np_out.shape == (3, 64, 64)
    np.testing.assert_allclose(np_out, out[:, 0].numpy(), atol=1e-6)
    one = conf.apply_numpy(x[1, 0].numpy(), uids[1])
    np.testing.assert_allclose(one, out[1, 0].numpy(), atol=1e-6)
    tfm = conf.as_dict_transform("image")
    d = tfm({"image": x[2], "uid": uids[2], "label": 1})
    assert d["label"] == 1 and torch.allclose(d["image"], out[2], atol=1e-6)
    flagged = conf.as_dict_transform(["image"], flag_key="confound")({"image": x[0], "uid": uids[0], "confound": False})
    assert torch.equal(flagged["image"], x[0])
    if not conf.deterministic:  # a different seed gives a different artifact
        other = create_confounder(name, seed=1)(x, uids)
        assert not torch.allclose(other, out)


def test_bad_inputs_raise_input_error() -> None:
    tag = create_confounder("tag")
    x, uids = _batch()
    with pytest.raises(InputError, match="NaN"):
        bad = x.clone()
        bad[0, 0, 0, 0] = float("nan")
        tag(bad, uids)
    with pytest.raises(InputError, match=r"\(B, C, H, W\)"):
        tag(x[0], uids)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        tag(x * 3, uids)
    with pytest.raises(InputError, match="uids"):
        tag(x, uids[:2])
    with pytest.raises(InputError, match="intensity"):
        create_confounder("tag", intensity=1.5)
    with pytest.raises(InputError, match="dict item has no 'uid'"):
        tag.as_dict_transform("image")({"image": x[0]})
    with pytest.raises(UnknownNameError, match="did you mean 'lowpass'"):
        create_confounder("lowpas")


@pytest.mark.parametrize("size", [128, 256, 1024])
def test_paper_tag_lands_where_asked_at_every_resolution(size: int) -> None:
    tag = create_confounder("paper-tag")
    out = tag(torch.zeros(2, 1, size, size), ["a", "b"])
    ys, xs = np.nonzero(out[0, 0].numpy() > 0.02)
    s = size / 1024
    # top-left corner of the ink at (200, 200) * s
    assert abs(ys.min() - 200 * s) <= 1 and abs(xs.min() - 200 * s) <= 1
    # the glyph height is DejaVu's cap height (0.729 em) of the scaled font size 64 * s
    height = ys.max() - ys.min() + 1
    assert abs(height - 0.729 * 64 * s) <= 1.5
    width = xs.max() - xs.min() + 1
    assert 0.4 * 64 * s - 1.5 <= width <= 0.62 * 64 * s + 1.5
    # white: full intensity where the light strokes cover whole pixels (anti-aliased when small)
    assert float(out.max()) > (0.95 if size >= 1024 else 0.5)
    assert torch.equal(out[0], out[1])  # a fixed tag: same on every image
    # nothing outside the glyph box
    assert float(out[0, 0, : round(200 * s) - 1].abs().max()) == 0


def test_laterality_and_text_block_positions() -> None:
    size = 256
    lat = create_confounder("laterality", corner="bottom-left", margin=60)
    out = lat(torch.zeros(1, 1, size, size), ["a"])[0, 0].numpy()
    ys, xs = np.nonzero(out > 0.02)
    assert abs(xs.min() - 15) <= 1 and abs((size - 1 - ys.max()) - 15) <= 1
    block = create_confounder("text-block", text="AP\nPORTABLE", corner="top-right", margin=40)
    out = block(torch.zeros(1, 1, size, size), ["a"])[0, 0].numpy()
    ys, xs = np.nonzero(out > 0.02)
    assert abs(ys.min() - 10) <= 1 and abs((size - 1 - xs.max()) - 10) <= 1
    assert ys.max() - ys.min() > 1.5 * 8  # two lines of 8 px text


def test_tag_jitter_is_per_uid() -> None:
    tag = create_confounder("tag", size=128, jitter=100)
    out = tag(torch.zeros(2, 1, 256, 256), ["a", "b"])
    assert not torch.equal(out[0], out[1])
    assert torch.equal(tag(torch.zeros(1, 1, 256, 256), ["b"])[0], out[1])


def _radius_full(n: int) -> np.ndarray:
    f = np.fft.fftshift(np.fft.fftfreq(n)) / 0.5
    return np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)


@pytest.mark.parametrize("size", [128, 1024])
def test_ideal_lowpass_has_no_power_beyond_cutoff(size: int) -> None:
    rng = np.random.default_rng(size)
    img = (0.25 + 0.5 * rng.random((size, size))).astype(np.float32)
    out = create_confounder("paper-lowpass").apply_numpy(img, "x")
    assert 0 < out.min() and out.max() < 1  # the final clamp did not touch it
    spec_in = np.abs(np.fft.fftshift(np.fft.fft2(img.astype(np.float64)))) ** 2
    spec = np.abs(np.fft.fftshift(np.fft.fft2(out.astype(np.float64)))) ** 2
    r = _radius_full(size)
    cutoff = 250 / 512
    assert spec[r > cutoff + 1e-9].sum() / spec.sum() < 1e-9
    inside = r <= cutoff - 1e-9
    np.testing.assert_allclose(spec[inside].sum(), spec_in[inside].sum(), rtol=1e-4)
    if size == 1024:  # the paper's disk: 500 bins across
        row = spec[512, :] > 1e-6 * np.median(spec[inside])
        assert row.sum() == 501


def test_butterworth_halves_amplitude_at_cutoff() -> None:
    n = 128
    yy, xx = np.mgrid[:n, :n]
    k = 16  # cycles across the image: r = k / (n / 2) = 0.25
    img = 0.5 + 0.2 * np.cos(2 * np.pi * k * xx / n)
    out = create_confounder("lowpass", kind="butterworth", cutoff=0.25, order=3).apply_numpy(img.astype(np.float32), "x")
    amp = np.abs(np.fft.fft2(out - 0.5))[0, k] / np.abs(np.fft.fft2(img - 0.5))[0, k]
    assert abs(amp - 1 / (1 + 1.0**6)) < 1e-3
    assert abs(out.mean() - 0.5) < 1e-5


@pytest.mark.parametrize("band", ["low", "mid", "high"])
def test_frequency_pattern_power_stays_in_band(band: str) -> None:
    from confounders.frequency import BANDS

    conf = create_confounder("freq-pattern", band=band, amplitude=0.1)
    img = np.full((1, 96, 96), 0.5, dtype=np.float32)
    out = conf.apply_numpy(img, ["a"])[0]
    diff = out.astype(np.float64) - 0.5
    assert abs(np.abs(diff).max() - 0.1) < 1e-5
    spec = np.abs(np.fft.fftshift(np.fft.fft2(diff))) ** 2
    r = _radius_full(96)  # fractions of Nyquist = 2 x cycles/pixel, the unit of BANDS
    lo, hi = 2 * BANDS[band][0], 2 * BANDS[band][1]
    assert spec[(r < lo - 1e-9) | (r > hi + 1e-9)].sum() / spec.sum() < 1e-9


def _poisson_moments_exact(x: float, n0: float, mu: float) -> tuple[float, float]:
    """Mean and std of -ln(max(c, 1)/n0)/mu for c ~ Poisson(n0 exp(-mu x)), by summing the pmf."""
    from scipy import stats

    lam = n0 * math.exp(-mu * x)
    c = np.arange(max(0, int(lam - 12 * math.sqrt(lam))), int(lam + 12 * math.sqrt(lam)) + 2)
    pmf = stats.poisson.pmf(c, lam)
    v = -np.log(np.maximum(c, 1) / n0) / mu
    m = (pmf * v).sum()
    return float(m), float(math.sqrt((pmf * (v - m) ** 2).sum()))


def test_poisson_noise_std_matches_theory_at_both_photon_counts() -> None:
    x0 = 0.9
    flat = torch.full((2, 1, 160, 160), x0)
    stds = {}
    for n0 in (1.5e7, 2e7):
        conf = create_confounder("poisson", n0=n0)
        out = conf(flat, ["a", "b"]).double()
        mean, expected = _poisson_moments_exact(x0, n0, conf.mu_max)
        assert abs(float(out.std()) / expected - 1) < 0.02
        assert abs(expected / conf.expected_std(x0) - 1) < 0.01  # first-order formula holds here
        assert abs(float(out.mean()) - mean) < 4 * expected / math.sqrt(out.numel())
        stds[n0] = float(out.std())
    assert abs(stds[1.5e7] / stds[2e7] - math.sqrt(2e7 / 1.5e7)) < 0.03


def _authors_noise_sd(grey: int, n0: float, shape: tuple[int, int], seed: int) -> float:
    """SD (grey levels) of Source Matters' recipe on a flat uint8 image, written from the recipe:
    dequantise, grey -> HU over [-1200, 800] -> mu, Poisson on n0 exp(-mu), back, clip, uint8."""
    rng = np.random.default_rng(seed)
    img = grey + rng.uniform(0.0, 1.0, size=shape)
    hu = img / 255.0 * 2000.0 - 1200.0
    mu = hu * (0.1837 - 0.1662) / 1000 + 0.1837
    proj = np.maximum(1e-8, rng.poisson(np.exp(-mu) * n0) / n0)
    back = np.clip(1000 * (-np.log(proj) - 0.1837) / (0.1837 - 0.1662), -1200, 800)
    return float(((back + 1200) / 2000 * 255).astype(np.uint8).std())


@pytest.mark.parametrize(("preset", "n0"), [("paper-noise", 1.5e7), ("paper-noise-reference", 2e7)])
def test_paper_noise_sd_matches_the_authors_recipe(preset: str, n0: float) -> None:
    conf = create_confounder(preset)
    assert conf.n0 == n0
    flat = torch.full((2, 1, 256, 256), 128 / 255)
    out = conf(flat, ["a", "b"]).double()
    ref = _authors_noise_sd(128, n0, (512, 256), seed=0) / 255
    # about 2 grey levels (0.006-0.0095 in [0, 1]); SDs of 131k pixels vary by about 0.5%
    assert 0.006 < ref < 0.0095
    assert abs(float(out.std()) / ref - 1) < 0.10
    assert torch.allclose(out * 255, torch.round(out * 255), atol=1e-3)  # quantised to uint8
    # almost even: dark and bright grey levels have nearly the same SD
    for grey in (40, 220):
        sd = float(conf(torch.full((1, 1, 256, 256), grey / 255), ["c"]).double().std())
        assert abs(sd / ref - 1) < 0.15


def test_gaussian_noise_std() -> None:
    out = create_confounder("gaussian", sigma=0.05)(torch.full((2, 1, 128, 128), 0.5), ["a", "b"])
    assert abs(float(out.std()) - 0.05) < 0.05 * 0.02


@pytest.mark.parametrize("quality", [10, 50, 90])
def test_jpeg_matches_pil(quality: int) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(quality)
    img = ndimage.gaussian_filter(rng.random((72, 88)), 2)
    img = np.round((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float64)
    out = create_confounder("jpeg", quality=quality).apply_numpy(img.astype(np.float32) / 255, "x") * 255
    distortion = np.abs(ref - img).mean()
    assert np.abs(out - ref).mean() < 0.3 * distortion
    assert np.abs(out - ref).mean() < 0.5


def test_vendor_curves_are_monotone_and_fix_endpoints() -> None:
    x = torch.linspace(0, 1, 101).view(1, 1, 1, 101)
    for curve, s in [("gamma", 0.6), ("sigmoid", 8.0), ("log", 10.0), ("inverse_s", 8.0)]:
        y = create_confounder("vendor-curve", curve=curve, strength=s)(x, ["a"]).flatten()
        assert float(y[0]) == pytest.approx(0, abs=1e-5) and float(y[-1]) == pytest.approx(1, abs=1e-5)
        assert bool((y[1:] >= y[:-1]).all())
    y = create_confounder("vendor-curve", curve="gamma", strength=0.5)(x, ["a"]).flatten()
    np.testing.assert_allclose(y.numpy(), np.sqrt(np.linspace(0, 1, 101)), atol=1e-6)


def test_collimation_border_widths() -> None:
    conf = create_confounder("collimation", min_frac=0.05, max_frac=0.15, intensity=1.0)
    img = torch.zeros(4, 1, 100, 100)
    out = conf(img, list("abcd"))
    b = conf.borders(list("abcd"), 100, 100)
    for i in range(4):
        m = out[i, 0].numpy() > 0.5
        top, bottom, left, right = (int(v) for v in b[i])
        assert 5 <= min(top, bottom, left, right) and max(top, bottom, left, right) <= 15
        rows = np.nonzero(~m.all(axis=1))[0]
        cols = np.nonzero(~m.all(axis=0))[0]
        assert rows.min() == top and rows.max() == 99 - bottom
        assert cols.min() == left and cols.max() == 99 - right


def test_drain_line_width_scales_with_resolution() -> None:
    areas = {}
    for size in (128, 256):
        out = create_confounder("drain", width=16)(torch.zeros(1, 1, size, size), ["a"])
        areas[size] = float(out.sum())
        assert out[0, 0, 0].max() > 0.5  # enters at the top edge
    assert 3.2 < areas[256] / areas[128] < 4.8  # length x width both scale by 2


class _InjectingDataset(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, uids: list[str], names: list[str]) -> None:
        self.images, self.uids = images, uids
        self.tfms = [create_confounder(n, seed=7).as_dict_transform("image") for n in names]

    def __len__(self) -> int:
        return len(self.uids)

    def __getitem__(self, i: int) -> torch.Tensor:
        d = {"image": self.images[i], "uid": self.uids[i]}
        for t in self.tfms:
            d = t(d)
        return d["image"]


def test_injection_identical_across_runs_and_worker_counts() -> None:
    x, uids = _batch(b=8, size=48, seed=3)
    names = ["poisson", "drain", "collimation"]
    ds = _InjectingDataset(x, uids, names)
    runs = []
    for workers in (0, 2, 0):
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers, shuffle=False)
        runs.append(torch.cat(list(loader)))
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    batched = x
    for n in names:
        batched = create_confounder(n, seed=7)(batched, uids)
    assert torch.allclose(runs[0], batched, atol=1e-6)



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ALL)
def test_injectors_run_on_gpu(name: str) -> None:
    conf = create_confounder(name)
    x, uids = _batch(b=4, size=96)
    out = conf(x.cuda(), uids)
    assert out.device.type == "cuda" and out.shape == x.shape
    assert torch.equal(conf(x.cuda(), uids), out)  # deterministic on the device
    if conf.deterministic:  # no per-sample random draws: same pixels as on CPU
        diff = (out.cpu() - conf(x, uids)).abs()
        if name == "jpeg":  # float64 GEMMs may round a rare coefficient the other way
            assert float((diff > 1e-5).float().mean()) < 0.01
        else:
            assert float(diff.max()) <= 1e-5


@pytest.mark.parametrize("lam", [3.0, 100.0, 1000.0])
def test_poisson_counts_match_exact_poisson_statistics(lam: float) -> None:
    """Exact draws below NORMAL_MIN_RATE and the skewness-corrected normal at and above it."""
    from scipy import stats

    from confounders.noise import NORMAL_MIN_RATE, poisson_counts

    assert NORMAL_MIN_RATE == 100.0  # 100 and 1000 exercise the approximation, 3 the exact branch
    n = 400_000
    c = poisson_counts(torch.full((n,), lam), torch.Generator().manual_seed(int(lam))).double().numpy()
    assert np.all(c == np.round(c)) and c.min() >= 0
    # moments: Poisson mean = variance = lam, skewness 1 / sqrt(lam) (a plain normal would give 0)
    assert abs(c.mean() - lam) < 4 * math.sqrt(lam / n)
    assert abs(c.var() / lam - 1) < 4 * math.sqrt(2 / n) + 2 / lam
    assert abs(stats.skew(c) - 1 / math.sqrt(lam)) < 4 * math.sqrt(6 / n)
    # whole distribution: KS distance to the Poisson CDF and a chi-square over well-filled bins
    k = np.arange(int(c.min()), int(c.max()) + 1)
    obs = np.bincount((c - k[0]).astype(int), minlength=len(k)).astype(float)
    ks = np.abs(np.cumsum(obs) / n - stats.poisson.cdf(k, lam)).max()
    assert ks < 1.63 / math.sqrt(n) + 2e-4
    exp = n * stats.poisson.pmf(k, lam)
    keep = exp >= 20
    obs_b = np.append(obs[keep], obs[~keep].sum())
    exp_b = np.append(exp[keep], n - exp[keep].sum())
    chi2 = ((obs_b - exp_b) ** 2 / exp_b).sum()
    assert stats.chi2.sf(chi2, len(obs_b) - 1) > 1e-3


def test_poisson_counts_mix_exact_and_approximate_rates_elementwise() -> None:
    from confounders.noise import poisson_counts

    rate = torch.tensor([0.5, 2e4] * 100_000)
    c = poisson_counts(rate, torch.Generator().manual_seed(5))
    low, high = c[0::2].double(), c[1::2].double()
    assert abs(float((low == 0).double().mean()) - math.exp(-0.5)) < 4 * math.sqrt(0.25 / 1e5)
    assert abs(float(high.mean()) - 2e4) < 4 * math.sqrt(2e4 / 1e5)
    assert abs(float(high.var()) / 2e4 - 1) < 0.02
    # the same generator state gives the same draws: the stream depends only on the rates
    assert torch.equal(c, poisson_counts(rate, torch.Generator().manual_seed(5)))


@pytest.mark.parametrize(("kind", "shape"), [("ideal", (90, 117)), ("ideal", (64, 64)), ("butterworth", (77, 50))])
def test_lowpass_equals_full_fft_filter(kind: str, shape: tuple[int, int]) -> None:
    """The pruned separable transform gives the plain full 2-D FFT filter (odd/non-square sizes)."""
    h, w = shape
    rng = np.random.default_rng(h * w)
    img = (0.3 + 0.4 * rng.random((2, 1, h, w))).astype(np.float32)
    cutoff = 0.37
    fy, fx = np.fft.fftfreq(h) / 0.5, np.fft.fftfreq(w) / 0.5
    r = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    tf = (r <= cutoff).astype(float) if kind == "ideal" else 1 / (1 + (r / cutoff) ** 4)
    ref = np.real(np.fft.ifft2(np.fft.fft2(img.astype(np.float64)) * tf))
    out = create_confounder("lowpass", kind=kind, cutoff=cutoff, order=2)(torch.from_numpy(img), ["a", "b"])
    np.testing.assert_allclose(out.numpy(), np.clip(ref, 0, 1), atol=2e-6)


def test_jpeg_matches_a_float64_block_dct_codec() -> None:
    """Against scipy's orthonormal 8x8 DCT in float64 with the IJG table (replicate padding)."""
    from scipy.fft import dctn, idctn

    from confounders.artifacts import jpeg_quant_table

    rng = np.random.default_rng(3)
    img = rng.random((3, 1, 45, 70)).astype(np.float32)
    out = create_confounder("jpeg", quality=35)(torch.from_numpy(img), ["a", "b", "c"]).numpy()
    q = jpeg_quant_table(35).numpy()
    x = np.pad(np.round(img.astype(np.float64) * 255) - 128, ((0, 0), (0, 0), (0, 3), (0, 2)), mode="edge")
    ref = np.empty_like(x)
    for i in range(0, 48, 8):
        for j in range(0, 72, 8):
            blk = x[..., i : i + 8, j : j + 8]
            coef = np.round(dctn(blk, axes=(-2, -1), norm="ortho") / q) * q
            ref[..., i : i + 8, j : j + 8] = idctn(coef, axes=(-2, -1), norm="ortho")
    ref = np.clip(np.round(ref[..., :45, :70] + 128), 0, 255) / 255
    diff = np.abs(out - ref)
    # float32 GEMMs: a coefficient at a rounding tie may flip, changing a few blocks slightly
    assert float((diff > 1e-6).mean()) < 0.01
    assert float(diff.mean()) < 1e-3


def test_copy_path_reports_the_whole_batch_range_and_inplace_leaves_bad_input_alone() -> None:
    conf = create_confounder("paper-lowpass")
    x, uids = _batch(b=40, size=64)  # several CPU chunks
    bad = x.clone()
    bad[37, 0, 5, 5] = 1.7
    bad[2, 0, 1, 1] = -0.25
    with pytest.raises(InputError, match=r"\[-0\.25, 1\.7\]"):
        conf(bad, uids)
    bad[37, 0, 5, 5] = float("inf")
    keep = bad.clone()
    with pytest.raises(InputError, match="NaN or inf"):
        conf(bad, uids, inplace=True)
    assert torch.equal(bad, keep)


@pytest.mark.parametrize("name", ["paper-lowpass", "poisson", "jpeg", "paper-tag", "gaussian"])
def test_non_contiguous_and_float64_inputs(name: str) -> None:
    conf = create_confounder(name)
    x, uids = _batch(b=3, size=64)
    ref = conf(x, uids)
    wide = torch.cat([x, x], dim=1)[:, 1:]  # a strided view
    assert not wide.is_contiguous()
    torch.testing.assert_close(conf(wide, uids), ref, atol=1e-6, rtol=0)
    out64 = conf(x.double(), uids)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), ref, atol=1e-5, rtol=0)


def test_confounder_as_a_pipeline_transform() -> None:
    from confounders.injection import ConfounderTransform
    from medbench.data.dataset import ArrayDataset
    from medbench.data.transforms import Pipeline

    x, uids = _batch(b=4, size=32)
    conf = create_confounder("tag")
    step = ConfounderTransform(conf, uids=uids[:2], scale="working")
    ds = ArrayDataset(x, [0, 1, 0, 1], pd.DataFrame({"uid": uids}), transform=Pipeline([step]))
    direct = conf(x[:2].clone(), uids[:2])  # the confounder on the chosen uids, drawn by (seed, uid)
    for i in range(4):
        img = ds[i][0]
        if i < 2:
            assert torch.allclose(img, direct[i], atol=1e-6) and not torch.allclose(img, x[i])
        else:
            assert torch.equal(img, x[i])  # not selected: untouched
    ds.set_epoch(3)
    assert torch.allclose(ds[0][0], direct[0], atol=1e-6)  # the same artifact every epoch

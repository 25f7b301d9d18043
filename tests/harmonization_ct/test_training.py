"""Training loops: resumable per epoch (a resumed run equals an uninterrupted one), checkpoints load safely."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from harmonization.ct.denoisers import create_denoiser
from harmonization.ct.learned import TwoStageModel, load_checkpoint
from harmonization.ct.simulate import Geometry
from harmonization.ct.training import (
    DenoiserTrainConfig,
    make_training_data,
    train_projection_stage,
    train_redcnn,
    train_two_stage,
)
from medbench.errors import InputError

GEO = Geometry(n_views=48, pixel_mm=10.0)
CFG = DenoiserTrainConfig(epochs=2, iters_per_epoch=3, batch_size=4, patch=16, proj_width=6, proj_depth=3,
                  img_width=6, img_depth=3, redcnn_width=4, lr_drop_epoch=1)


@pytest.fixture(scope="module")
def data():
    return make_training_data(2, 3, size=32, n0=2.5e4, geometry=GEO, split="unit")


def _states_equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_resumed_training_equals_uninterrupted(data, tmp_path) -> None:
    full = load_checkpoint(train_two_stage(data, CFG, tmp_path / "a", progress=False))
    # "crash" after the first projection epoch, then run the whole thing again
    train_projection_stage(data, replace(CFG, epochs=1), tmp_path / "b", progress=False)
    assert load_checkpoint(tmp_path / "b" / "projection_last.pt")["epoch"] == 1
    resumed = load_checkpoint(train_two_stage(data, CFG, tmp_path / "b", progress=False))
    assert _states_equal(full["projection"]["state"], resumed["projection"]["state"])
    assert _states_equal(full["image"]["state"], resumed["image"]["state"])
    assert len(full["meta"]["history"]) == CFG.epochs
    # a finished run is skipped
    path = tmp_path / "b" / "two_stage.pt"
    mtime = path.stat().st_mtime_ns
    train_two_stage(data, CFG, tmp_path / "b", progress=False)
    assert path.stat().st_mtime_ns == mtime


def test_ablation_variants_and_redcnn(data, tmp_path) -> None:
    ck = load_checkpoint(train_two_stage(data, replace(CFG, use_prior=False), tmp_path / "np", progress=False))
    assert ck["projection"]["config"]["use_prior"] is False
    ck = load_checkpoint(train_two_stage(data, replace(CFG, use_projection=False), tmp_path / "ni", progress=False))
    assert ck["projection"] is None and ck["image"]["config"]["use_residual"] is False
    model = TwoStageModel.from_checkpoint(tmp_path / "ni" / "two_stage.pt")
    assert model.denoise(data[0].ld_hu).shape == data[0].ld_hu.shape
    with pytest.raises(InputError, match="21 px"):
        train_redcnn(data, CFG, tmp_path / "red", progress=False)
    path = train_redcnn(data, replace(CFG, patch=24), tmp_path / "red", progress=False)
    den = create_denoiser("redcnn", checkpoint=path)
    assert den(data[0].ld_hu).shape == data[0].ld_hu.shape
    assert load_checkpoint(path)["geometry"]["filter_name"] == GEO.filter_name == "shepp-logan"
    with pytest.raises(InputError, match="not a two-stage"):
        TwoStageModel.from_checkpoint(path)


def test_training_lowers_the_loss_and_the_error(data, tmp_path) -> None:
    cfg = replace(CFG, epochs=4, iters_per_epoch=10, use_projection=False, img_width=8, lr=3e-3, lr_drop_epoch=None)
    ck = load_checkpoint(train_two_stage(data, cfg, tmp_path, progress=False))
    hist = ck["meta"]["history"]
    assert hist[-1] < hist[0]
    out = TwoStageModel.from_checkpoint(tmp_path / "two_stage.pt").denoise(data[1].ld_hu)
    err = lambda x: float(np.sqrt(np.mean((x - data[1].fd_hu) ** 2)))  # noqa: E731
    assert err(out) < err(data[1].ld_hu)


def test_bad_checkpoint_is_an_input_error(tmp_path) -> None:
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError):
        load_checkpoint(bad)
    with pytest.raises(InputError):
        train_two_stage([], CFG, tmp_path)


def test_mixed_dose_training(tmp_path) -> None:
    data = make_training_data(2, 2, size=32, n0=[1e4, 1e5], geometry=GEO, split="mixed")
    assert [d.n0 for d in data] == [1e4, 1e5]
    # the lower dose is the noisier one
    assert np.std(data[0].ld_hu - data[0].fd_hu) > 2 * np.std(data[1].ld_hu - data[1].fd_hu)
    ck = load_checkpoint(train_two_stage(data, replace(CFG, epochs=1), tmp_path, progress=False))
    assert ck["n0"] == pytest.approx(np.sqrt(1e4 * 1e5))  # default prior dose: geometric mean
    assert ck["meta"]["n0_train"] == [1e4, 1e5]


def test_networks_wire_the_prior_and_residual_channels() -> None:
    from harmonization.ct.networks import ImageDomainNet, ProjectionNet

    net = ProjectionNet(width=4, depth=3, use_prior=True, seed=1)
    for p in net.parameters():  # leave the zero-initialised last layer non-zero
        torch.nn.init.normal_(p, std=0.3, generator=torch.Generator().manual_seed(0))
    p = torch.rand(1, 1, 12, 10) * 4
    s1, s2 = torch.full_like(p, 0.02), torch.full_like(p, 0.08)
    assert not torch.allclose(net(p, s1), net(p, s2))  # the noise prior reaches the output
    with pytest.raises(ValueError):
        net(p, None)
    # fresh residual networks start as the identity (zero residual)
    img = ImageDomainNet(n_adjacent=3, use_residual=True, width=4, depth=3)
    x = torch.rand(2, 3, 16, 16) * 100
    assert torch.count_nonzero(img(x, torch.zeros_like(x))) == 0
    assert ImageDomainNet(n_adjacent=3, use_residual=False, width=4, depth=3)(x).shape == (2, 1, 16, 16)


def test_checkpoints_keep_their_fbp_filter(tmp_path) -> None:
    """The bundled two-stage weights were trained with the ramp filter and record it, so they keep
    loading as ramp after the default became Shepp-Logan; a checkpoint without the field is ramp too."""
    from harmonization.ct.denoisers import WEIGHTS_DIR

    bundled = WEIGHTS_DIR / "two_stage.pt"
    assert TwoStageModel.from_checkpoint(bundled).geometry.filter_name == "ramp"
    ck = torch.load(bundled, weights_only=True)
    ck["geometry"].pop("filter_name")
    torch.save(ck, tmp_path / "old.pt")
    assert TwoStageModel.from_checkpoint(tmp_path / "old.pt").geometry.filter_name == "ramp"
    ck["geometry"]["filter_name"] = "hann"
    torch.save(ck, tmp_path / "hann.pt")
    assert TwoStageModel.from_checkpoint(tmp_path / "hann.pt").geometry.filter_name == "hann"


def test_training_data_description_names_the_filter(data, tmp_path) -> None:
    from harmonization.ct.training import describe_data

    ramp = make_training_data(1, 1, size=32, geometry=replace(GEO, filter_name="ramp"), split="unit")
    assert describe_data(data)["filter"] == "shepp-logan" and describe_data(ramp)["filter"] == "ramp"
    with pytest.raises(InputError, match="mix geometries"):
        train_redcnn([data[0], ramp[0]], replace(CFG, patch=24), tmp_path, progress=False)

"""Contract tests over every registry entry, and a throwaway plugin picked up by name.

Each registry has one test parametrised (in :func:`pytest_generate_tests`, at collection time)
over every registered name: the entry satisfies its extension point's Protocol, can be created
with defaults or a tiny fixture, and gives output of the right shape and type on tiny data.
:func:`throwaway_plugin` writes one module that registers a confounder, a metric and a denoiser;
the tests below show that the contract tests collect and pass for them, and use them by name in an
audit spec, the transfer pipeline and ``denoise apply``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from confounders.base import CONFOUNDERS, ConfounderProtocol, create_confounder
from confounders.sampled import SAMPLED, SampledConfounderProtocol, build_prevalence_splits
from confounders.taxonomy import validate_path
from harmonization.ct.denoisers import DENOISERS, DenoiserProtocol, create_denoiser
from harmonization.ct.evaluation import make_cases
from harmonization.xray.baselines import HARMONIZERS, HarmonizerProtocol, create_harmonizer
from harmonization.xray.predictor import CurvePredictor
from medbench.errors import InputError, UnknownNameError
from medbench.registry import Registry, missing_members
from medbench.sources.registry import SOURCES, SourceCardProtocol, create_source
from medbench.tracking import TRACKERS, Tracker
from medbench.train.hooks import ORDERINGS, SPARSITY, Ordering, Sparsity, TrainHook
from medbench.utils.optional import has_module
from transferability.metrics import METRICS, TransferMetric

#: fixture argument -> the registry whose every name it runs over
pytest_plugins = ["pytester"]

REGISTRIES: dict[str, Registry[Any]] = {
    "confounder": CONFOUNDERS, "sampled": SAMPLED, "metric": METRICS, "denoiser": DENOISERS,
    "harmonizer": HARMONIZERS, "source": SOURCES, "ordering": ORDERINGS, "sparsity": SPARSITY,
    "tracker": TRACKERS,
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for arg, registry in REGISTRIES.items():
        if arg in metafunc.fixturenames:
            metafunc.parametrize(arg, registry.names())


# -- confounders ------------------------------------------------------------------------------
def test_confounder_contract(confounder: str) -> None:
    cls = CONFOUNDERS.get(confounder)
    assert missing_members(cls, ConfounderProtocol) == []
    validate_path(cls.miccat)
    conf = create_confounder(confounder, seed=3, ref_size=32)
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    uids = ["a", "b", "c"]
    out = conf(x, uids)
    assert out.shape == x.shape and out.dtype == x.dtype and out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)))  # input untouched
    # randomness from (seed, name, uid) only: one image alone gets what it got in the batch
    assert torch.allclose(conf(x[1:2], ["b"]), out[1:2], atol=1e-6)


def test_sampled_confounder_contract(sampled: str) -> None:
    conf = SAMPLED.get(sampled)
    assert missing_members(conf, SampledConfounderProtocol) == []
    validate_path(conf.miccat)
    group = conf.group if conf.group is not None else "A"
    rng = np.random.default_rng(0)
    n = 160
    meta = pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "label": rng.integers(0, 2, n),
                         conf.column: np.where(rng.random(n) < 0.5, group, "other")})
    splits = build_prevalence_splits(meta, p=1.0, column=conf.column, group=group, n_splits=2, seed=0)
    assert len(splits) == 2
    for s in splits:
        pos, neg = s.train[s.train.target == 1], s.train[s.train.target == 0]
        assert len(pos) and (pos[conf.column] == group).all()  # p = 1: every training positive in the group
        assert len(neg) and (neg[conf.column] != group).all()  # the paper: negatives all from the others
        assert not set(s.train.patient_id) & set(s.test_ood.patient_id)


# -- transferability metrics ------------------------------------------------------------------
def _tiny_features(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], 20)
    x = rng.normal(size=(60, 6)) + 2.0 * np.eye(6)[y]
    logits = rng.normal(size=(60, 5)) + 1.5 * np.eye(5)[y]
    return x, y, logits


class _TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.early = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.early(torch.relu(self.first(x))).mean(dim=(2, 3))


def test_metric_contract(metric: str) -> None:
    spec = METRICS.get(metric)
    assert missing_members(spec, TransferMetric) == []
    assert spec.needs >= ({"features", "labels"} if spec.kind == "features" else set())
    sources = ["s0", "s1", "s2"]
    if spec.kind == "features":
        x, y, logits = _tiny_features()
        kw = {"logits": logits} if spec.needs_logits else {}
        value = float(spec(x, y, **kw))
        assert np.isfinite(value)
        if spec.combine is not None:  # relative: one score per candidate source
            parts = {s: spec.part(*_tiny_features(i)[:2]) for i, s in enumerate(sources)}
            got = spec.combine(parts)
            assert set(got) == set(sources) and all(np.isfinite(v) for v in got.values())
    elif spec.kind == "gradient":
        torch.manual_seed(0)
        model = _TinyConv()
        images = torch.rand(24, 1, 16, 16, generator=torch.Generator().manual_seed(1))
        labels = np.tile([0, 1], 12)  # 6 batches of 4, two images of each class in each
        value = float(spec(model, images, labels, device="cpu", layers=("first", "early"), embed=model))
        assert np.isfinite(value) and value >= 0
    else:
        vals = [dict(zip(sources, np.random.default_rng(i).random(3), strict=True)) for i in range(len(spec.parts))]
        assert all(p in METRICS for p in spec.parts)
        got = spec.combine(*vals)
        assert set(got) == set(sources) and all(np.isfinite(v) for v in got.values())


# -- CT denoisers -----------------------------------------------------------------------------
def test_denoiser_contract(denoiser: str, small_ct: np.ndarray) -> None:
    cls = DENOISERS.get(denoiser)
    assert missing_members(cls, DenoiserProtocol) == []
    if denoiser == "bm3d" and not has_module("bm3d"):
        pytest.skip("the optional bm3d package is not installed")
    den = create_denoiser(denoiser)
    before = small_ct.copy()
    out = den(small_ct, n0=2.5e4, pixel_mm=5.0)
    assert out.shape == small_ct.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.array_equal(small_ct, before)  # input never modified
    assert isinstance(den.params(), dict)
    if cls.trainer is not None:
        assert cls.learned, "a trained denoiser loads a checkpoint"


@pytest.fixture(scope="module")
def small_ct() -> np.ndarray:
    return make_cases(1, 1, size=64, n0=2.5e4, seed=0, split="test")[0].sim.ld_hu


# -- X-ray harmonizers ------------------------------------------------------------------------
def test_harmonizer_contract(harmonizer: str) -> None:
    cls = HARMONIZERS.get(harmonizer)
    assert missing_members(cls, HarmonizerProtocol) == []
    rng = np.random.default_rng(0)
    ref, imgs = rng.random((4, 24, 24)).astype(np.float32), (rng.random((3, 24, 24)) ** 2).astype(np.float32)
    if cls.needs:  # fitted elsewhere (GDCE by `harmonize fit`): a tiny identity-curve predictor
        with pytest.raises(InputError):
            create_harmonizer(harmonizer).fit(ref)
        torch.manual_seed(0)
        h = create_harmonizer(harmonizer, predictors={"*": CurvePredictor(input_size=16, widths=(4, 4))}).fit(ref)
        out = h.transform(imgs, vendor="any")
        assert np.allclose(out, imgs, atol=1e-5)  # the predictor starts at the identity curve
    else:
        out = create_harmonizer(harmonizer).fit(ref).transform(imgs)
    assert out.shape == imgs.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1 + 1e-6


# -- sources ----------------------------------------------------------------------------------
def test_source_contract(source: str) -> None:
    card = SOURCES.get(source)
    assert missing_members(card, SourceCardProtocol) == [] and callable(card.loader)
    if card.needs_weights:
        with pytest.raises(InputError, match="weights"):
            create_source(source)
        return
    if source != "random":  # the others download pretrained weights: covered in tests/sources
        return
    model = create_source(source, arch="resnet18", num_classes=3)
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)


# -- training engine --------------------------------------------------------------------------
def test_ordering_contract(ordering: str) -> None:
    sampler = ORDERINGS.create(ordering, dataset_size=7, seed=0)
    assert isinstance(sampler, Ordering) and len(sampler) == 7
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(0)
    assert sorted(int(i) for i in sampler) == list(range(7))  # every index once per epoch


def test_sparsity_contract(sparsity: str) -> None:
    hook = SPARSITY.create(sparsity, pattern="2:4")
    assert isinstance(hook, TrainHook) and isinstance(hook, Sparsity)
    assert isinstance(hook.state_dict(), dict) and isinstance(hook.summary(), dict)


def test_tracker_contract(tracker: str, tmp_path: Path) -> None:
    cls = TRACKERS.get(tracker)
    assert missing_members(cls, Tracker) == []
    if tracker != "none" and not has_module(tracker):
        pytest.skip(f"the optional {tracker} package is not installed")
    t = TRACKERS.create(tracker, run_dir=tmp_path, name="contract")
    t.log_config({"a": {"b": 1}})
    t.log_metrics({"loss": 0.5, "note": "text"}, step=0)
    t.close()


# -- the registry mechanism -------------------------------------------------------------------
def test_registry_checks_protocol_and_unregisters() -> None:
    reg: Registry[Any] = Registry("thing", protocol=Tracker, entry="class")

    class Half:
        def log_config(self, config: Any) -> None: ...

    with pytest.raises(TypeError, match="missing close, log_artifact, log_metrics"):
        reg.add("half", Half)
    with reg.temporary("none", TRACKERS.get("none")):
        assert reg.names() == ["none"]
    assert reg.names() == []
    with pytest.raises(UnknownNameError):
        reg.unregister("none")


def test_a_broken_builtin_module_is_an_error_not_a_missing_entry() -> None:
    from medbench.errors import MissingDependencyError

    reg: Registry[Any] = Registry("thing", builtins=("medbench.no_such_module",))
    with pytest.raises(ModuleNotFoundError):
        reg.names()
    extra: Registry[Any] = Registry("thing", builtins=("medbench_no_such_third_party_pkg",))
    with pytest.raises(MissingDependencyError, match="medbench_no_such_third_party_pkg"):
        extra.get("x")


# -- a throwaway plugin -----------------------------------------------------------------------
PLUGIN = '''
"""A throwaway plugin: one module adding a confounder, a metric and a denoiser."""
import numpy as np
from confounders.base import Confounder, register_confounder
from harmonization.ct.denoisers import DENOISERS, Denoiser
from transferability.metrics import register_metric


@register_confounder("throwaway-invert")
class Invert(Confounder):
    """Inverts the image (a test entry)."""

    miccat = ("environment", "imaging", "vendor")
    keeps_range = True

    def apply(self, images, uids):
        return images.neg_().add_(1.0)


@register_metric("throwaway-mean-gap")
def mean_gap(features, labels, *, logits=None):
    """Distance between the first two class means (a test entry)."""
    x, y = np.asarray(features, float), np.asarray(labels)
    a, b = np.unique(y)[:2]
    return float(np.linalg.norm(x[y == a].mean(0) - x[y == b].mean(0)))


@DENOISERS.register("throwaway-offset")
class Offset(Denoiser):
    """Adds a constant (a test entry)."""

    name = "throwaway-offset"

    def __init__(self, hu=1.0):
        self.hu = float(hu)

    def _denoise_slice(self, hu):
        return hu + self.hu
'''
THROWAWAY = {"confounder": "throwaway-invert", "metric": "throwaway-mean-gap", "denoiser": "throwaway-offset"}


@pytest.fixture
def throwaway_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Import a one-module plugin from a temporary folder; unregister its entries afterwards."""
    (tmp_path / "mb_throwaway_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    importlib.import_module("mb_throwaway_plugin")
    try:
        yield THROWAWAY
    finally:
        for kind, name in THROWAWAY.items():
            if name in REGISTRIES[kind]:
                REGISTRIES[kind].unregister(name)
        sys.modules.pop("mb_throwaway_plugin", None)


def test_throwaway_plugin_is_collected_by_the_registry_tests(throwaway_plugin: dict[str, str],
                                                            pytester_run: Callable[..., Any]) -> None:
    # the parametrised contract tests of this module collect and pass for the new entries
    result = pytester_run("-k", "contract and throwaway")
    result.assert_outcomes(passed=len(throwaway_plugin))
    result.stdout.fnmatch_lines(["*3 passed*"])
    for kind, name in throwaway_plugin.items():
        assert name in REGISTRIES[kind].names()


def test_throwaway_plugin_is_usable_by_name(throwaway_plugin: dict[str, str], tmp_path: Path) -> None:
    names = throwaway_plugin
    # the audit spec takes the confounder by name
    from confounders.specs import build_confounder

    conf = build_confounder({"name": names["confounder"]}, seed=0)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(conf(x, ["a", "b"]), 1.0 - x)
    # the transfer pipeline scores the metric by name, on each source's features
    from medbench.data.synthetic import write_cxr_dataset
    from medbench.train.experiment import read_table
    from transferability.pipeline import run_transfer

    write_cxr_dataset(tmp_path / "t", 12, size=32, seed=1)
    res = run_transfer(read_table(tmp_path / "t"), tmp_path / "run", sources=["random:resnet18"],
                       metrics=[names["metric"]], size=32, batch_size=12)
    with np.load(tmp_path / "run" / "features" / "random_resnet18.npz") as z:
        f, y = z["features"].astype(float), z["labels"]
    want = np.linalg.norm(f[y == 0].mean(0) - f[y == 1].mean(0))
    assert res.scores.set_index("metric").loc[names["metric"], "score"] == pytest.approx(want, rel=1e-9)
    # denoise apply takes the denoiser by name and writes its output
    from harmonization.ct.apply import denoise_batch
    from medbench.data.synthetic import write_ct_series_dataset
    from medbench.io.series import read_series

    write_ct_series_dataset(tmp_path / "ct", 1, n_slices=2, size=32, progress=False)
    src = tmp_path / "ct" / "ct-000"
    table = denoise_batch(src, tmp_path / "den", denoiser=names["denoiser"], params={"hu": 7.0}, progress=False,
                          allow_noise_increase=True)
    assert list(table["status"]) == ["written"]
    before, after = read_series(src).hu, read_series(Path(table["output"][0])).hu
    body = before > -500  # the air padding is kept as it is
    assert np.allclose(after[body], before[body] + 7.0, atol=1.0)  # HU stored as integers


def test_throwaway_entries_are_gone_after_the_plugin_test() -> None:
    for kind, name in THROWAWAY.items():
        with pytest.raises(UnknownNameError):
            REGISTRIES[kind].get(name)


@pytest.fixture
def pytester_run(pytester: pytest.Pytester) -> Callable[..., Any]:
    """Run this module's tests in-process (the registries, with the plugin, are shared).

    pytester drops every module first imported during the test when it ends, so the inner run
    must import nothing new: what the contract tests use is imported at the top of this module.
    """

    def run(*args: str) -> Any:
        return pytester.runpytest_inprocess(str(Path(__file__)), "-p", "no:cacheprovider", "-q", *args)

    return run

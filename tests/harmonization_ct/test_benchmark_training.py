"""benchmarks/ct_denoise.py: the learned models are trained at the benchmark's geometry and dose."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from harmonization.ct.evaluation import make_cases
from harmonization.ct.learned import load_checkpoint
from harmonization.ct.simulate import Geometry

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ct_denoise.py"
GEO = Geometry(n_views=24, pixel_mm=8.0)


def _module():
    spec = importlib.util.spec_from_file_location("ct_denoise_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(train_volumes=1, train_slices=3, size=32, n0=2.5e4, epochs=1, iters=2,
                              work_dir=tmp_path)


def test_learned_models_train_at_the_benchmark_geometry_with_one_budget(tmp_path) -> None:
    mod = _module()
    test = make_cases(1, 1, size=32, n0=2.5e4, geometry=GEO, split="test")
    paths, info = mod.train_learned(_args(tmp_path), GEO, test)
    assert set(paths) == {"two_stage", "redcnn"}
    two, red = load_checkpoint(paths["two_stage"]), load_checkpoint(paths["redcnn"])
    for ck in (two, red):
        assert ck["geometry"] == {"n_views": 24, "pixel_mm": 8.0, "mu_water": GEO.mu_water, "filter_name": "shepp-logan"}
        assert ck["meta"]["n0"] == 2.5e4
        assert (ck["meta"]["config"]["epochs"], ck["meta"]["config"]["iters_per_epoch"]) == (1, 2)
    assert "1 ep x 2 it" in info["budget"]
    assert info["train_uids"] == ["train-0"] and info["test_uids"] == ["test-0"]


def test_training_refuses_a_test_slice_among_the_training_data(tmp_path) -> None:
    mod = _module()
    leaked = make_cases(1, 3, size=32, n0=2.5e4, geometry=GEO, split="train")  # the training phantom itself
    assert leaked[0].name == "train-0"
    with pytest.raises(RuntimeError, match="not disjoint"):
        mod.train_learned(_args(tmp_path), GEO, leaked)

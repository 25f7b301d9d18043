"""`medbench denoise` output folders are medbench.runs run folders: a changed setting is refused
(every change listed, exit 2) and config.yaml always describes the outputs; a SIGKILLed run resumes
to the same outputs as an uninterrupted one, with no temporary files left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from harmonization.ct.apply import simulate_phantoms
from harmonization.ct.simulate import Geometry
from harmonization.ct.training import DenoiserTrainConfig, make_training_data, train_two_stage
from medbench.errors import InputError
from medbench.io import read_series

ROOT = Path(__file__).resolve().parents[2]
SIM = ["--slices", "2", "--size", "32", "--views", "60", "--pixel-mm", "10", "--workers", "1"]
GEO = Geometry(n_views=60, pixel_mm=10.0)


def _medbench(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen([sys.executable, "-m", "medbench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _config(out: Path) -> dict:
    return yaml.safe_load((out / "config.yaml").read_text())["settings"]


def _snapshot(out: Path) -> dict[str, object]:
    """Everything a simulate run computed: per phantom its record, sinograms and pixel values."""
    snap: dict[str, object] = {}
    for folder in sorted(out.glob("phantom-*")):
        snap[f"{folder.name}/done"] = json.loads((folder / "done.json").read_text())
        with np.load(folder / "sinograms.npz") as z:
            for k in z.files:
                snap[f"{folder.name}/{k}"] = z[k]
        for dose in ("full_dose", "low_dose"):
            snap[f"{folder.name}/{dose}"] = read_series(folder / dose).hu
            snap[f"{folder.name}/{dose}/files"] = sorted(p.name for p in (folder / dose).iterdir())
    return snap


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def _temps(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*.tmp")]


@pytest.mark.slow
def test_changed_settings_are_refused_through_the_cli_and_config_matches(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    simulate_phantoms(out, 1, n0=2.5e4, n_slices=2, size=32, geometry=GEO, seed=0, workers=1)
    proc = _medbench("denoise", "simulate", "--synthetic", "1", "--out", str(out), *SIM, "--seed", "3",
                     "--n0", "1e4")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "2 changed" in err and "n0: 25000.0 -> 10000.0" in err and "seed: 0 -> 3" in err and "--restart" in err
    # refused: the folder still describes what it holds
    assert _config(out)["seed"] == 0 == json.loads((out / "phantom-000" / "done.json").read_text())["seed"]
    simulate_phantoms(out, 1, n0=1e4, n_slices=2, size=32, geometry=GEO, seed=3, workers=1, restart=True)
    done = json.loads((out / "phantom-000" / "done.json").read_text())
    assert (_config(out)["seed"], _config(out)["n0"]) == (done["seed"], done["n0"]) == (3, 1e4)


def test_train_refuses_changed_settings_listing_each(tmp_path: Path) -> None:
    data = make_training_data(1, 3, size=32, geometry=Geometry(n_views=48, pixel_mm=10.0), split="unit")
    cfg = DenoiserTrainConfig(epochs=1, iters_per_epoch=1, batch_size=2, patch=16, proj_width=4, proj_depth=3,
                      img_width=4, img_depth=3, use_projection=False)
    path = train_two_stage(data, cfg, tmp_path, progress=False)
    with pytest.raises(InputError, match=r"2 changed: train\.epochs: 1 -> 3; train\.lr: 0\.001 -> 0\.01.*--restart"):
        train_two_stage(data, replace(cfg, epochs=3, lr=1e-2), tmp_path, progress=False)
    assert _config(tmp_path)["train"]["epochs"] == 1
    from harmonization.ct.learned import load_checkpoint

    assert len(load_checkpoint(path)["meta"]["history"]) == 1  # the model still is the 1-epoch one
    train_two_stage(data, replace(cfg, epochs=2), tmp_path, progress=False, restart=True)
    assert _config(tmp_path)["train"]["epochs"] == len(load_checkpoint(path)["meta"]["history"]) == 2
    assert json.loads((tmp_path / "metrics.json").read_text())["image_l1"] == load_checkpoint(path)["meta"]["history"]


@pytest.mark.slow
def test_killed_simulate_resumes_to_the_uninterrupted_outputs(tmp_path: Path) -> None:
    n = 5
    full = tmp_path / "full"
    simulate_phantoms(full, n, n0=2.5e4, n_slices=2, size=32, geometry=GEO, seed=0, workers=1)
    out = tmp_path / "killed"
    proc = _medbench("denoise", "simulate", "--synthetic", str(n), "--out", str(out), *SIM)
    deadline = time.time() + 120
    while not (out / "units" / "phantom-000.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "units").glob("*.json")))
    assert 1 <= done < n  # killed mid-run
    simulate_phantoms(out, n, n0=2.5e4, n_slices=2, size=32, geometry=GEO, seed=0, workers=1)
    _assert_same(_snapshot(full), _snapshot(out))
    assert _temps(out) == []
    assert _config(out) == _config(full)

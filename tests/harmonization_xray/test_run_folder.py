"""`medbench harmonize` output folders are medbench.runs run folders: a changed setting is refused
(every change listed, exit 2) and config.yaml always describes the outputs; a SIGKILLed apply resumes
to the same files as an uninterrupted one, with no temporary files left."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import torch
import yaml

from harmonization.xray.gdce import GDCEConfig, save_predictor
from harmonization.xray.pipeline import apply_folder
from harmonization.xray.predictor import CurvePredictor

ROOT = Path(__file__).resolve().parents[2]
WIDTHS = (4, 8, 8, 8, 16)


def _model(path: Path, bias: float) -> Path:
    p = CurvePredictor(input_size=32, widths=WIDTHS)
    with torch.no_grad():
        p.head[-1].bias.fill_(bias)  # a constant curve a = tanh(bias)
    return save_predictor({"*": p}, path, GDCEConfig(input_size=32, widths=WIDTHS))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _medbench(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen([sys.executable, "-m", "medbench", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _config(out: Path) -> dict:
    return yaml.safe_load((out / "config.yaml").read_text())["settings"]


def _outputs(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): _sha(p) for p in sorted(out.rglob("*.dcm"))}


@pytest.mark.slow
def test_changed_settings_are_refused_through_the_cli_and_config_matches(tmp_path: Path, synthetic_cxr_dir) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted((Path(synthetic_cxr_dir) / "images").glob("*.dcm"))[:3]:
        shutil.copy(p, src / p.name)
    a, b = _model(tmp_path / "a.pt", 0.5), _model(tmp_path / "b.pt", -0.3)
    out = tmp_path / "out"
    apply_folder(a, src, out, workers=1, progress=False)
    before = _outputs(out)
    proc = _medbench("harmonize", "apply", str(src), "--model", str(b), "--out", str(out), "--workers", "1",
                     "--deidentify")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "3 changed" in err and "deidentify: False -> True" in err and "--restart" in err
    assert f"model: '{a.resolve()}' -> '{b.resolve()}'" in err and "model_sha256:" in err
    assert _outputs(out) == before  # refused: nothing touched
    # config.yaml names the model whose fingerprint the written files carry
    desc = str(pydicom.dcmread(next(out.glob("*.dcm"))).DerivationDescription)
    assert _config(out)["model_sha256"] == _sha(a)[:12] and f"model {_sha(a)[:12]}" in desc
    table = apply_folder(b, src, out, workers=1, progress=False, deidentify=True, restart=True)
    assert set(table["status"]) == {"written"}  # every image recomputed with the new model
    desc = str(pydicom.dcmread(next(out.glob("*.dcm"))).DerivationDescription)
    assert _config(out)["model_sha256"] == _sha(b)[:12] and f"model {_sha(b)[:12]}" in desc
    assert _config(out)["deidentify"] is True


@pytest.mark.slow
def test_killed_apply_resumes_to_the_uninterrupted_outputs(tmp_path: Path, synthetic_cxr_dir) -> None:
    src = Path(synthetic_cxr_dir) / "images"
    n = len(list(src.glob("*.dcm")))
    model = _model(tmp_path / "m.pt", 0.4)
    full = tmp_path / "full"
    apply_folder(model, src, full, workers=1, progress=False)
    out = tmp_path / "killed"
    proc = _medbench("harmonize", "apply", str(src), "--model", str(model), "--out", str(out), "--workers", "1")
    deadline = time.time() + 120
    while not (out / "units").is_dir() or not any((out / "units").glob("*.json")):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the batch and its worker process
    proc.wait()
    done = len(list((out / "units").glob("*.json")))
    assert 1 <= done < n  # killed mid-run
    table = apply_folder(model, src, out, workers=1, progress=False)
    assert (table["status"] == "skipped").sum() >= done
    assert _outputs(out) == _outputs(full)  # byte-identical files (UIDs derive from model and source)
    assert [p for p in out.rglob(".*.tmp")] == []
    assert _config(out) == _config(full)


def test_apply_refuses_a_changed_model_in_process(tmp_path: Path, synthetic_cxr_dir) -> None:
    from medbench.errors import InputError

    src = tmp_path / "in"
    src.mkdir()
    first = sorted((Path(synthetic_cxr_dir) / "images").glob("*.dcm"))[0]
    shutil.copy(first, src / first.name)
    a, b = _model(tmp_path / "a.pt", 0.5), _model(tmp_path / "b.pt", -0.3)
    out = tmp_path / "out"
    apply_folder(a, src, out, workers=1, progress=False)
    with pytest.raises(InputError, match=r"2 changed: model: .*a\.pt' -> .*b\.pt'; model_sha256: .*--restart"):
        apply_folder(b, src, out, workers=1, progress=False)
    again = apply_folder(a, src, out, workers=1, progress=False)  # same settings: resumes, nothing rewritten
    assert list(again["status"]) == ["skipped"] and (out / "harmonize.log").is_file()


@pytest.mark.slow
def test_fit_resumes_when_finished_and_refuses_changes(tmp_path: Path) -> None:
    import pandas as pd

    from harmonization.xray.fit_job import fit_harmonizer
    from medbench.data.synthetic import write_cxr_dataset
    from medbench.errors import InputError

    write_cxr_dataset(tmp_path / "data", 60, size=32, seed=1, vendors={"RefVendor": 0.6, "VendorLog": 0.4},
                      progress=False)
    table = pd.read_csv(tmp_path / "data" / "labels.csv")
    kw = {"vendor_column": "Manufacturer", "reference": "RefVendor", "size": 32, "steps": 2, "classifier_epochs": 1,
          "feature_source": "random", "baselines": (), "n_boot": 20, "progress": False}
    out = tmp_path / "run"
    assert fit_harmonizer(table, out, **kw)["resumed"] is False
    stamp = (out / "model.pt").stat().st_mtime_ns
    again = fit_harmonizer(table, out, **kw)
    assert again["resumed"] is True and (out / "model.pt").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(again["results"], pd.read_csv(out / "results.csv"))
    with pytest.raises(InputError, match=r"2 changed: seed: 0 -> 1; steps: 2 -> 3.*--restart"):
        fit_harmonizer(table, out, **{**kw, "steps": 3, "seed": 1})
    saved = torch.load(out / "model.pt", weights_only=True)["config"]
    assert _config(out)["steps"] == saved["steps"] == 2 and _config(out)["seed"] == saved["seed"] == 0
    assert (out / "harmonize.log").is_file() and (out / "metrics.json").is_file()

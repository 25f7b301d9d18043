"""``medbench demo --quick`` end to end: report, metrics, sane AUCs, resume, extra steps."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from medbench import demo


@pytest.mark.slow
def test_demo_quick_end_to_end_and_resume(tmp_path: Path) -> None:
    from medbench.cli import app

    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--quick", "--no-progress"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert f"report: {(out / 'report.html').resolve()}" in res.output
    html = (out / "report.html").read_text()
    assert "ROC curves" in html and "<img" in html
    metrics = json.loads((out / "metrics.json").read_text())
    per = {r["source"]: r for r in metrics["per_source"]}
    assert "random" in per
    if demo.PRETRAINED in per:
        assert len(metrics["pairwise"]) == 1  # the paired comparison of the two sources
    pred = pd.concat([pd.read_parquet(out / "runs" / s / "predictions.parquet") for s in per])
    test = pred[pred["split"] == "test"]
    from sklearn.metrics import roc_auc_score

    for s, row in per.items():
        assert 0.0 <= row["lo"] <= row["auc"] <= row["hi"] <= 1.0
        assert row["n"] == len(test) // len(per)  # every source predicted the same test images
        part = pd.read_parquet(out / "runs" / s / "predictions.parquet").query("split == 'test'")
        assert row["auc"] == pytest.approx(roc_auc_score(part["label"], part["prob"]))
    assert len(list((out / "data" / "images").glob("*.dcm"))) == 80
    assert len(pd.read_parquet(out / "ingest" / "manifest.parquet")) == 80

    # re-running skips finished units: nothing is retrained or rewritten, a new step is easy to add
    stamps = {p: p.stat().st_mtime_ns for p in [*out.glob("runs/*/checkpoints/last.pt"), *out.glob("data/images/*.dcm")]}
    seen = []
    demo.add_step("extra", lambda ctx: seen.append(sorted(ctx.state["results"])), before="report")
    try:
        ctx = demo.run_demo(out, quick=True, progress=False)
    finally:
        demo.STEPS[:] = [s for s in demo.STEPS if s[0] != "extra"]
    assert seen == [sorted(per)]
    assert [n for n in ctx.timings] == ["data", "ingest", "table", "train", "audit", "extra", "report"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_demo_rejects_tiny_inputs(tmp_path: Path) -> None:
    from medbench.errors import InputError

    with pytest.raises(InputError, match="--n"):
        demo.run_demo(tmp_path, n=5)


DEMO = ["--n", "20", "--size", "32", "--no-progress", "--source", "random", "--no-audit"]


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of the console entry point ``medbench ARGV``."""
    import sys

    from medbench.cli import main

    monkeypatch.setattr(sys, "argv", ["medbench", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code), capsys.readouterr().err


def test_demo_rerun_with_changed_settings_refuses_listing_every_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Only the cheap data step runs (the refusal comes before any step); config.yaml and the data
    unit always describe the data on disk."""
    import yaml

    from medbench.data.synthetic import write_cxr_dataset

    monkeypatch.setattr(demo, "STEPS", [("data", demo.step_data)])
    out = tmp_path / "demo"
    assert _main(["demo", "--out", str(out), *DEMO], monkeypatch, capsys)[0] == 0
    labels = (out / "data" / "labels.csv").read_bytes()
    code, err = _main(["demo", "--out", str(out), *DEMO, "--seed", "1", "--epochs", "3"], monkeypatch, capsys)
    assert code == 2
    assert "(2 changed: epochs: 5 -> 3; seed: 0 -> 1)" in err and "--restart" in err, err
    assert (out / "data" / "labels.csv").read_bytes() == labels  # refused: nothing touched
    assert yaml.safe_load((out / "config.yaml").read_text())["settings"]["seed"] == 0
    code, err = _main(["demo", "--out", str(out), *DEMO, "--seed", "1", "--epochs", "3", "--restart"],
                      monkeypatch, capsys)
    assert code == 0, err
    config = yaml.safe_load((out / "config.yaml").read_text())["settings"]
    assert (config["seed"], config["epochs"], config["sources"], config["audit"]) == (1, 3, ["random"], False)
    unit = json.loads((out / "units" / "data.json").read_text())
    assert unit["settings"] == {"n": 20, "size": 32, "seed": 1}
    write_cxr_dataset(tmp_path / "seed1", 20, size=32, seed=1, progress=False)  # what seed 1 must give
    expect = pd.read_csv(tmp_path / "seed1" / "labels.csv").drop(columns="path")
    pd.testing.assert_frame_equal(pd.read_csv(out / "data" / "labels.csv").drop(columns="path"), expect)
    assert "demo step data" in (out / "demo.log").read_text()


@pytest.mark.slow
def test_demo_killed_mid_run_resumes_to_the_uninterrupted_outputs(tmp_path: Path, kill_at) -> None:
    """SIGKILL once the source's first checkpoint exists, the same command again: the outputs of an
    uninterrupted run (CPU, one thread, fixed seed: exactly equal), and no temporary file left."""
    import signal
    import sys

    from medbench.cli import app

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "medbench", "demo", "--out", str(out), *DEMO, "--quick", "--epochs", "2"]

    killed, watcher = kill_at(command(tmp_path / "run")[3:], tmp_path / "run" / "runs" / "random" / "checkpoints" / "last.pt")
    # the uninterrupted reference, meanwhile, in this process (one torch thread here too, see conftest)
    ref = CliRunner().invoke(app, command(tmp_path / "ref")[3:])
    assert ref.exit_code == 0, ref.output + repr(ref.exception)
    watcher.join()
    assert killed.wait() == -signal.SIGKILL  # killed mid-run, not finished
    a, b = tmp_path / "ref", tmp_path / "run"
    assert not (b / "units" / "report.json").exists() and (b / "units" / "data.json").exists()
    again = CliRunner().invoke(app, command(b)[3:])  # the same command again (in this process: no start-up)
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert json.loads((a / "metrics.json").read_text()) == json.loads((b / "metrics.json").read_text())
    for name in ("runs/random/predictions.parquet", ):
        pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))
    for name in ("metrics_per_source.csv", "settings.yaml", "runs/random/metrics.json", "runs/random/splits.csv"):
        assert (a / name).read_text() == (b / name).read_text(), name
    assert sorted(p.name for p in (b / "units").iterdir()) == ["data.json", "ingest.json", "report.json",
                                                                "train-random.json"]
    assert "resumed " in (b / "demo.log").read_text()  # the training run continued from its checkpoint
    assert not [p for p in b.rglob(".*.tmp")]

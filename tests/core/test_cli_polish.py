"""The command line's help, option style and user-facing messages."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from medbench.cli import app


def _commands(cmd: Any, path: tuple[str, ...] = ("medbench",)) -> Iterator[tuple[tuple[str, ...], Any]]:
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _commands(sub, (*path, name))
    if not subs or getattr(cmd, "invoke_without_command", False):
        yield path, cmd


ALL = list(_commands(typer.main.get_command(app)))


def test_the_tree_is_complete() -> None:
    names = {" ".join(p[1:]) for p, _ in ALL}
    assert {"train", "audit", "transfer", "harmonize fit", "denoise train", "export nifti", "export monai",
            "ingest", "sources"} <= names


@pytest.mark.parametrize(("path", "cmd"), ALL, ids=[" ".join(p[1:]) for p, _ in ALL])
def test_every_option_has_help_and_no_double_negative(path: tuple[str, ...], cmd: Any) -> None:
    assert (cmd.help or "").strip(), f"{' '.join(path)} has no docstring"
    for param in cmd.params:
        names = [*param.opts, *getattr(param, "secondary_opts", [])]
        assert not any(n.startswith("--no-no-") for n in names), names
        assert (getattr(param, "help", None) or "").strip(), f"{' '.join(path)} {names[0]} has no help"


def test_repeated_values_use_one_style() -> None:
    """A list-valued option is repeatable (``--source a --source b``); none asks for commas."""
    for path, cmd in ALL:
        for param in cmd.params:
            text = (getattr(param, "help", "") or "").lower()
            assert "comma-separated" not in text, (path, param.opts)
            if getattr(param, "multiple", False):
                assert "repeat" in text, (path, param.opts)


@pytest.mark.parametrize("argv", [["train", "--help"], ["denoise", "train", "--help"], ["ingest", "--help"]])
def test_help_shows_no_bool_tags(argv: list[str]) -> None:
    res = CliRunner().invoke(app, argv, env={"COLUMNS": "100"})
    assert res.exit_code == 0
    assert "<bool>" not in res.output and "--no-no-" not in res.output
    assert "<int>" in res.output or "<path>" in res.output  # the value types are still shown


def test_repeated_and_comma_forms_parse_the_same() -> None:
    from medbench.utils.text import split_list

    assert split_list(["a", "b,c", " ", "d "]) == ["a", "b", "c", "d"]
    assert split_list("x,y") == ["x", "y"] and split_list(None) == []


def test_confounders_prints_no_doc_markup() -> None:
    res = CliRunner().invoke(app, ["confounders"], env={"COLUMNS": "100"})
    assert res.exit_code == 0
    assert not re.search(r"``|:(func|class|meth|mod):`", res.output), res.output


def test_sources_table_fits_100_columns() -> None:
    res = CliRunner().invoke(app, ["sources"], env={"COLUMNS": "100"})
    assert res.exit_code == 0
    width = max(len(line) for line in res.output.splitlines())
    assert width <= 100, width
    assert "efficientnet-lite0-imagenet" in res.output and "radimagenet" in res.output


def test_verbose_keeps_matplotlib_font_debug_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from medbench.cli import _root

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    _root(verbose=True)
    assert logging.getLogger("medbench").getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger("matplotlib.font_manager").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("PIL.PngImagePlugin").getEffectiveLevel() == logging.WARNING


def test_ctrl_c_prints_how_to_resume_and_exits_130(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import medbench.cli as cli

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 130
    assert "interrupted; re-run the same command to resume" in capsys.readouterr().err


def test_offline_imagenet_error_names_the_cli_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from medbench.errors import OfflineError
    from medbench.sources import create_source

    with pytest.raises(OfflineError) as exc:
        create_source("imagenet", arch="resnet10t")
    msg = str(exc.value)
    assert "--weights PATH" in msg and "create_source(" not in msg


def test_finished_train_follows_settings_and_the_input_table(tmp_path: Path) -> None:
    """A finished train run is recognised without torch; other settings or an edited table are not it."""
    import json

    import pandas as pd

    from medbench.runs import open_run
    from medbench.train.config import TrainConfig
    from medbench.train.experiment import EVALUATION, finished_train, table_digest, train_settings

    table = pd.DataFrame({"path": ["/d/a.dcm", "/d/b.dcm"], "label": [0, 1]})
    base = train_settings(table, source="random", cfg=TrainConfig(epochs=2))
    # runtime-only settings (progress, workers, device) do not change what is computed
    assert train_settings(table, source="random", cfg=TrainConfig(epochs=2, progress=False, num_workers=2,
                                                                   device="cpu")) == base
    run = tmp_path / "run"
    with open_run(run, "train", base) as r:
        (run / "metrics.json").write_text(json.dumps({"per_source": []}))
        (run / "summary.json").write_text(json.dumps({"epochs_run": 2}))
        (run / "report.html").write_text("<html></html>")
        r.mark_unit(EVALUATION, base)
    assert finished_train(run, base)["summary"] == {"epochs_run": 2}
    assert finished_train(run, train_settings(table, source="random", cfg=TrainConfig(epochs=3))) is None
    edited = table.assign(label=[1, 0])
    assert table_digest(edited) != table_digest(table) and table_digest(table.copy()) == table_digest(table)
    assert finished_train(run, train_settings(edited, source="random", cfg=TrainConfig(epochs=2))) is None
    (run / "report.html").unlink()
    assert finished_train(run, base) is None  # a binary task's report went missing: not finished

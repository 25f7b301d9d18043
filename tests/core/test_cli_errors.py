"""Command-line usage errors end in one line on stderr and exit code 2, never in a traceback."""

from __future__ import annotations

import sys

import pytest

from medbench import cli


@pytest.mark.parametrize("argv", [
    ["denoise", "apply", "IN", "--out", "OUT", "--no-such-option"],
    ["train", "--manifest"],
    ["no-such-command"],
])
def test_usage_errors_exit_2_without_a_traceback(argv, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["medbench", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err and err.strip(), err

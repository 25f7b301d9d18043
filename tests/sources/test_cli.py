"""``medbench sources`` and ``medbench sources convert-radimagenet`` through the real app."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

from medbench.cli import app

from .keras_layout import random_weights, resnet50_keras_shapes, write_keras2_h5


def test_sources_table_lists_every_card() -> None:
    from medbench.sources import list_sources

    result = CliRunner().invoke(app, ["sources", "--details"])
    assert result.exit_code == 0, result.output
    for card in list_sources():
        assert card.name in result.output
    assert "BGR" in result.output  # RadImageNet's caffe preprocessing is shown


def test_convert_radimagenet_command(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from medbench.sources.keras_h5 import read_keras_h5
    from medbench.sources.keras_resnet import resnet50_state_dict

    h5 = write_keras2_h5(tmp_path / "r.h5", random_weights(resnet50_keras_shapes(), seed=3))
    out = tmp_path / "r.safetensors"
    result = CliRunner().invoke(app, ["sources", "convert-radimagenet", str(h5), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "resnet50" in result.output and "keras" in result.output
    got, want = load_file(str(out)), resnet50_state_dict(read_keras_h5(h5))
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_convert_missing_file_fails_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sources", "convert-radimagenet", str(tmp_path / "no.h5"), "--out", str(tmp_path / "x.pt")])
    assert result.exit_code != 0
    assert "does not exist" in str(result.exception) + result.output

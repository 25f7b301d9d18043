"""The one checkpoint helper: round trip, atomic replace, clear errors, and every loop uses it."""

from __future__ import annotations

import pytest
import torch

from medbench.errors import InputError
from medbench.runs import checkpoint as ck


def test_round_trip_keeps_tensors_numbers_strings_and_nesting(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    state = {"model": {"w": torch.randn(3, 4, generator=g), "b": torch.arange(4)}, "epoch": 7,
             "history": [0.5, 0.25], "config": {"lr": 1e-3, "name": "x", "flags": [True, None]}}
    (tmp_path / "sub").mkdir()
    path = ck.save_checkpoint(tmp_path / "sub" / "last.pt", state)
    back = ck.load_checkpoint(path)
    assert back.keys() == state.keys() and back["epoch"] == 7 and back["history"] == [0.5, 0.25]
    assert back["config"] == state["config"]
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["model"]["b"].dtype == torch.int64
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["last.pt"]  # no temporary left


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    ck.save_checkpoint(path, {"epoch": 1})

    def torn_save(obj, f, *a, **k):  # writes half a file, then the process "dies"
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert ck.load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_unusable_files_are_input_errors_naming_the_fix(tmp_path) -> None:
    with pytest.raises(InputError, match="does not exist: re-run it"):
        ck.load_checkpoint(tmp_path / "nope.pt", fix="re-run it")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="checkpoint .* cannot be read .*start over"):
        ck.load_checkpoint(tmp_path / "junk.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(InputError, match="not a medbench checkpoint"):
        ck.load_checkpoint(tmp_path / "list.pt")


class _Payload:
    """An arbitrary class: unpickling it would run code from this module."""


def test_code_is_never_unpickled(tmp_path) -> None:
    torch.save({"x": _Payload()}, tmp_path / "obj.pt")
    with pytest.raises(InputError, match="cannot be read .*will not unpickle"):
        ck.load_checkpoint(tmp_path / "obj.pt")


def test_every_checkpointing_loop_uses_the_one_helper() -> None:
    import harmonization.ct.learned as ct_learned
    import harmonization.ct.training as ct_training
    import harmonization.xray.gdce as gdce
    import medbench.sources.checkpoint as sources
    import medbench.train.checkpoint as engine

    for mod in (engine, ct_training, gdce, sources):
        assert mod.save_checkpoint is ck.save_checkpoint, mod.__name__
    assert engine.load_checkpoint is ck.load_checkpoint
    assert gdce.load_checkpoint is ck.load_checkpoint
    assert ct_learned._load_checkpoint is ck.load_checkpoint


def test_source_weights_in_torch_format_go_through_the_helper(tmp_path, monkeypatch) -> None:
    from medbench.sources import checkpoint as sources

    seen = []
    monkeypatch.setattr(sources, "save_checkpoint", lambda p, sd: seen.append((p, sorted(sd))) or p)
    sources.save_source_weights(torch.nn.Linear(2, 1), tmp_path / "w.pt")
    assert seen == [(tmp_path / "w.pt", ["bias", "weight"])]

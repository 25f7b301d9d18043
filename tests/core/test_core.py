"""Shared core: registry, seeded RNG, atomic files, hashing, parallel map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medbench.errors import InputError, MissingDependencyError, UnknownNameError
from medbench.parallel import Failure, map_items
from medbench.registry import Registry
from medbench.utils.files import atomic_path, hash_id, write_json_atomic
from medbench.utils.optional import optional_import
from medbench.utils.rng import derive_seed, numpy_rng, torch_generator


def test_registry_create_and_did_you_mean():
    reg: Registry = Registry("widget")

    @reg.register("lowpass")
    class LowPass:
        def __init__(self, cutoff: float = 0.5) -> None:
            self.cutoff = cutoff

    assert reg.create("lowpass", cutoff=0.2).cutoff == 0.2
    assert reg.names() == ["lowpass"] and "lowpass" in reg
    with pytest.raises(UnknownNameError, match="did you mean 'lowpass'"):
        reg.get("lowpas")
    with pytest.raises(ValueError, match="already registered"):
        reg.add("lowpass", LowPass)


def test_rng_depends_only_on_seed_and_keys():
    assert derive_seed(0, "a") == derive_seed(0, "a")
    assert derive_seed(0, "a") != derive_seed(1, "a") != derive_seed(0, "b")
    a = numpy_rng(3, "uid-1").random(4)
    assert np.array_equal(a, numpy_rng(3, "uid-1").random(4))
    t1 = torch.rand(3, generator=torch_generator(3, "uid-1"))
    assert torch.equal(t1, torch.rand(3, generator=torch_generator(3, "uid-1")))
    state = np.random.get_state()[1].copy()
    numpy_rng(5, "x").random()
    assert np.array_equal(state, np.random.get_state()[1])  # global state untouched


def test_atomic_path_leaves_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_hash_id_is_stable_and_hides_the_value():
    h = hash_id("PATIENT^JOHN")
    assert h == hash_id("PATIENT^JOHN") and len(h) == 32 and "JOHN" not in h  # 16 was brute-forced
    assert hash_id(None) == "" and hash_id("a") != hash_id("b")


def _square_or_fail(x: int) -> int:
    if x == 3:
        raise InputError("three is bad")
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_map_items_keeps_order_and_records_failures(workers: int):
    out = map_items(_square_or_fail, range(8), workers=workers, progress=False)
    assert [o for i, o in enumerate(out) if i != 3] == [i * i for i in range(8) if i != 3]
    assert isinstance(out[3], Failure) and out[3].error == "InputError" and "three" in out[3].message


def test_map_items_unknown_executor():
    with pytest.raises(ValueError, match="did you mean 'dask'"):
        map_items(_square_or_fail, [1], executor="dusk")


def test_optional_import_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"medbench\[scale\]"):
        optional_import("surely_not_a_module_xyz", extra="scale")


@pytest.mark.slow
def test_dask_executor_matches_local():
    pytest.importorskip("dask.distributed")
    local = map_items(_square_or_fail, range(6), workers=2, progress=False)
    dask = map_items(_square_or_fail, range(6), workers=2, executor="dask", progress=False)
    assert [o if not isinstance(o, Failure) else o.error for o in local] == [
        o if not isinstance(o, Failure) else o.error for o in dask]

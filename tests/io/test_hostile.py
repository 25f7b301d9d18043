"""Hostile input (issue 17): decoder crashes, header faults, bombs, interrupted saves, messy valid files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medbench.io.manifest import ScanResult, parse_age, scan, scan_file
from medbench.parallel import WORKER_CRASH, Failure, map_items


class _Panic(BaseException):
    """Stands in for pyo3's PanicException (a BaseException, not an Exception)."""


def _crashy(x: int) -> int:
    if x == 3:
        os.abort()
    if x == 5:
        raise _Panic("rust panicked")
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_abort_and_base_exception_do_not_end_the_batch(workers: int) -> None:
    out = map_items(_crashy, range(9), workers=workers, isolate=True, progress=False)
    assert isinstance(out[3], Failure) and out[3].error == WORKER_CRASH
    assert isinstance(out[5], Failure) and out[5].error == "_Panic"
    assert [out[i] for i in (0, 1, 2, 4, 6, 7, 8)] == [0, 1, 4, 16, 36, 49, 64]


def test_ingest_decode_quarantines_a_crashing_decoder(tmp_path: Path, ct_small_path: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import medbench.io.manifest as manifest_module

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.dcm", "abort.dcm", "panic.dcm", "z.dcm"):
        shutil.copy(ct_small_path, folder / name)
    real = manifest_module.read_dicom

    def hostile(path: str, **kw):  # workers are forked, so they inherit this patch
        if path.endswith("abort.dcm"):
            os.abort()
        if path.endswith("panic.dcm"):
            raise _Panic("decoder panicked")
        return real(path, **kw)

    monkeypatch.setattr(manifest_module, "read_dicom", hostile)
    res = scan(folder, workers=2, progress=False, decode=True)
    assert sorted(Path(p).name for p in res.manifest["path"]) == ["a.dcm", "z.dcm"]
    reasons = dict(zip((Path(p).name for p in res.quarantine["path"]), res.quarantine["reason"]))
    assert reasons == {"abort.dcm": "decoder_crash", "panic.dcm": "decoder_crash"}


def _image(make_dicom, path: Path, **tags) -> Path:
    return make_dicom(path, np.arange(16, dtype=np.uint16).reshape(4, 4), **tags)


@pytest.mark.parametrize(("tags", "reason"), [
    ({"BitsStored": 0}, "bad_bits"),
    ({"BitsStored": 17}, "bad_bits"),
    ({"PixelRepresentation": 2}, "bad_pixel_representation"),
    ({"PixelRepresentation": 65535}, "bad_pixel_representation"),
    ({"SamplesPerPixel": 0}, "bad_samples_per_pixel"),
    ({"SamplesPerPixel": 131}, "bad_samples_per_pixel"),
    ({"PhotometricInterpretation": "RGB"}, "bad_samples_per_pixel"),  # RGB with 1 sample
    ({"PhotometricInterpretation": "MONOCHROME3"}, "bad_photometric"),
    ({"NumberOfFrames": "-1"}, "bad_frames"),
    ({"NumberOfFrames": "0"}, "bad_frames"),
    ({"NumberOfFrames": "1.5"}, "bad_frames"),
    ({"blank_ts": True}, "no_transfer_syntax"),
])
@pytest.mark.parametrize("fast", [True, False])
def test_header_faults_get_their_reason(tmp_path: Path, make_dicom, tags: dict, reason: str, fast: bool) -> None:
    tags = dict(tags)  # the parametrize dict is shared between the fast and pydicom runs
    blank = tags.pop("blank_ts", False)
    path = _image(make_dicom, tmp_path / "f.dcm", **tags)
    if blank:  # pydicom will not write an empty TransferSyntaxUID: blank its value in place
        uid = b"1.2.840.10008.1.2.1\x00"
        path.write_bytes(path.read_bytes().replace(uid, b" " * len(uid), 1))
    row = scan_file(str(path), fast=fast)
    assert (row["status"], row["reason"]) == ("quarantined", reason), row


def test_number_of_frames_one_point_zero_is_accepted(tmp_path: Path, make_dicom) -> None:
    path = _image(make_dicom, tmp_path / "f.dcm", NumberOfFrames="1.0")
    for fast in (True, False):
        row = scan_file(str(path), decode=True, fast=fast)
        assert row["status"] == "ok" and row["frames"] == 1, row


def test_pixel_budget_refuses_bombs_before_decoding(tmp_path: Path, make_dicom, ct_small_path: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import medbench.io.manifest as manifest_module

    def never(*a, **k):
        raise AssertionError("decoded a file over the budget")

    monkeypatch.setattr(manifest_module, "read_dicom", never)
    # CT_small: 128 x 128 x 1 frame x 1 sample x 2 bytes = 32768 bytes
    row = scan_file(ct_small_path, decode=True, budget=32767)
    assert row["reason"] == "pixel_budget" and "over the" in row["message"]
    # a compressed-looking bomb: the header claims 65535 x 65535 x 16-bit (8 GiB) with tiny pixel data
    bomb = _image(make_dicom, tmp_path / "bomb.dcm", transfer_syntax="1.2.840.10008.1.2.5", Rows=65535, Columns=65535,
                  pixel_bytes=b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\x00\xe0\x02\x00\x00\x00\x00\x00"
                              b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    assert scan_file(str(bomb), decode=True)["reason"] == "pixel_budget"  # default 2 GiB
    monkeypatch.setenv("MEDBENCH_PIXEL_BUDGET", str(10 << 30))
    assert scan_file(str(bomb)).get("reason") != "pixel_budget"


def test_non_finite_pixels_are_quarantined(tmp_path: Path, make_dicom) -> None:
    from pydicom import dcmread

    path = _image(make_dicom, tmp_path / "f.dcm")
    ds = dcmread(path)
    del ds.PixelData
    values = np.arange(16, dtype="<f4")
    values[5] = np.nan
    ds.FloatPixelData = values.tobytes()
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    del ds.PixelRepresentation
    ds.save_as(path, enforce_file_format=True)
    row = scan_file(str(path), decode=True)
    assert row["reason"] == "non_finite" and row["message"].startswith("1 ")
    assert scan_file(str(path))["status"] == "ok"  # header-only scans do not decode


def _write_tables(counter: dict[str, int], fail_at: int):
    """atomic_path that raises (a kill) when the ``fail_at``-th file of a save is committed."""
    from medbench.utils import files

    real = files.atomic_path

    def wrapped(path):
        counter["n"] += 1
        if counter["n"] == fail_at:
            raise KeyboardInterrupt("killed")
        return real(path)

    return wrapped


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_killed_save_never_makes_resume_reuse_a_stale_row(tmp_path: Path, ct_small_path: str, make_dicom,
                                                          monkeypatch: pytest.MonkeyPatch, fail_at: int) -> None:
    from pydicom import dcmread

    import medbench.io.manifest as manifest_module

    folder, run = tmp_path / "in", tmp_path / "run"
    folder.mkdir()
    shutil.copy(ct_small_path, folder / "a.dcm")
    shutil.copy(ct_small_path, folder / "b.dcm")
    scan(folder, workers=1, progress=False).save(run)
    ds = dcmread(folder / "b.dcm")
    ds.Manufacturer, ds.SOPInstanceUID = "CHANGED", "1.2.3.4"
    ds.save_as(folder / "b.dcm")
    counter = {"n": 0}
    monkeypatch.setattr(manifest_module, "atomic_path", _write_tables(counter, fail_at))
    with pytest.raises(KeyboardInterrupt):
        scan(folder, workers=1, progress=False, resume_from=run).save(run)
    monkeypatch.undo()
    resumed = scan(folder, workers=1, progress=False, resume_from=run)
    row = resumed.manifest.set_index(resumed.manifest["path"].map(lambda p: Path(p).name)).loc["b.dcm"]
    assert (row["manufacturer"], row["sop_uid"]) == ("CHANGED", "1.2.3.4")
    resumed.save(run)
    loaded = ScanResult.load(run)
    assert loaded.state is not None and len(loaded.manifest) == 2


def test_truncated_header_and_preambleless_file(tmp_path: Path, ct_small_path: str) -> None:
    data = Path(ct_small_path).read_bytes()
    for cut in (200, 700, 1000):  # inside the file meta group; inside the data set header
        (tmp_path / f"cut{cut}.dcm").write_bytes(data[:cut])
        assert scan_file(str(tmp_path / f"cut{cut}.dcm"))["reason"] == "truncated", cut
    meta_end = 144 + int.from_bytes(data[140:144], "little")  # group length (0002,0000)
    raw = tmp_path / "nometa.dcm"
    raw.write_bytes(data[meta_end:])
    row, ref = scan_file(str(raw), decode=True), scan_file(ct_small_path)
    assert row["status"] == "ok" and row["sop_uid"] == ref["sop_uid"]


def test_stray_leading_bytes_are_quarantined_with_the_fix(tmp_path: Path) -> None:
    """pydicom's no_meta.dcm: one stray byte, then a preamble-less explicit-LE data set."""
    import pydicom
    from pydicom.data import get_testdata_file

    src = Path(get_testdata_file("no_meta.dcm"))
    data = src.read_bytes()
    assert data[1:5] == b"\x08\x00\x05\x00"  # (0008,0005) little endian, one byte in
    assert "PixelData" not in pydicom.dcmread(src, force=True)  # pydicom reads it as junk too
    for fast in (True, False):
        row = scan_file(str(src), decode=True, fast=fast)
        assert row["status"] == "quarantined" and row["reason"] == "stray_bytes", row
        assert "byte 1" in row["message"] and "tail -c +2" in row["message"]
    assert src.read_bytes() == data  # the input is never modified
    fixed = tmp_path / "fixed.dcm"  # the fix the message names
    fixed.write_bytes(data[1:])
    row = scan_file(str(fixed), decode=True)
    ref = pydicom.dcmread(fixed, force=True)
    assert row["status"] == "ok" and row["sop_uid"] == ref.SOPInstanceUID
    assert (row["rows"], row["columns"]) == (ref.Rows, ref.Columns)


def test_junk_with_an_element_like_start_a_few_bytes_in_is_not_dicom(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 6 + b"\x08\x00\x05\x00CS\x0a\x00" + b"x" * 200)  # 6 stray bytes: too many
    assert scan_file(str(junk))["reason"] == "not_dicom"


def test_parse_age_follows_dicom_as() -> None:
    assert parse_age("045Y") == 45.0 and parse_age("006M") == 0.5 and parse_age("010W") == pytest.approx(70 / 365.25)
    assert all(np.isnan(parse_age(v)) for v in ("000Y", "000D", "45Y", "0045Y", "04AY"))
    assert parse_age("58") == 58.0


def test_un_of_undefined_length_defers_to_pydicom(tmp_path: Path, make_dicom) -> None:
    """The fast path must give pydicom's row (or reason) for a private UN of undefined length."""
    path = _image(make_dicom, tmp_path / "f.dcm")
    data = path.read_bytes()
    pos = data.index(b"\x08\x00\x60\x00")  # (0008,0060) Modality: insert before it
    private = b"\x09\x00\x10\x10UN\x00\x00\xff\xff\xff\xff" + b"\x09\x00\x11\x10LO\x04\x00ABCD"  # no delimiter
    bad = tmp_path / "un.dcm"
    bad.write_bytes(data[:pos] + private + data[pos:])
    assert scan_file(str(bad), fast=True) == scan_file(str(bad), fast=False)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medbench.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}, timeout=120)


def test_bad_executor_is_one_line_exit_2(tmp_path: Path, ct_small_path: str) -> None:
    (tmp_path / "in").mkdir()
    shutil.copy(ct_small_path, tmp_path / "in" / "a.dcm")
    res = _cli("ingest", str(tmp_path / "in"), "--out", str(tmp_path / "run"), "--executor", "foo")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "unknown executor 'foo'" in res.stderr
    assert not (tmp_path / "run").exists()


def test_corrupt_denoise_checkpoint_and_unknown_denoiser_fail_up_front(tmp_path: Path, ct_small_path: str) -> None:
    pytest.importorskip("torch")
    from harmonization.ct.apply import denoise_batch
    from medbench.errors import InputError, UnknownNameError

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot be read|cannot be created") as info:
        denoise_batch(ct_small_path, tmp_path / "out", denoiser="redcnn", params={"checkpoint": str(bad)})
    assert "\n" not in str(info.value)
    with pytest.raises(UnknownNameError):
        denoise_batch(ct_small_path, tmp_path / "out", denoiser="two_stag")
    assert not (tmp_path / "out").exists()


def test_corrupt_harmonize_model_fails_once_up_front(tmp_path: Path, ct_small_path: str) -> None:
    pytest.importorskip("torch")
    from harmonization.xray.pipeline import apply_folder
    from medbench.errors import InputError

    (tmp_path / "in").mkdir()
    shutil.copy(ct_small_path, tmp_path / "in" / "a.dcm")
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot be read"):
        apply_folder(bad, tmp_path / "in", tmp_path / "out", workers=1, progress=False)


def test_single_class_labels_refused_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import medbench.sources as sources
    from medbench.errors import InputError
    from medbench.train.experiment import run_experiment

    def never(*a, **k):
        raise AssertionError("a model was built for single-class labels")

    monkeypatch.setattr(sources, "create_source", never)
    table = pd.DataFrame({"path": [f"{i}.png" for i in range(10)], "label": [1] * 10})
    with pytest.raises(InputError, match="only class \\[1\\]"):
        run_experiment(table, tmp_path / "run", label="label", source="imagenet")


def test_denoise_batch_survives_a_worker_abort(synthetic_ct_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """One series whose worker aborts is reported failed; the other is written (workers=1, isolated)."""
    import harmonization.ct.apply as apply

    real = apply._denoise_job
    groups = apply.find_series(synthetic_ct_dir)
    first_series = set(next(iter(groups.values())))
    assert len(groups) == 2

    def hostile(job):  # the forked worker inherits this patch
        if job[1][0] in first_series:
            os.abort()
        return real(job)

    monkeypatch.setattr(apply, "_denoise_job", hostile)
    table = apply.denoise_batch(synthetic_ct_dir, tmp_path / "out", denoiser="gaussian", workers=1, progress=False)
    assert sorted(table["status"]) == ["failed", "written"]
    failed = table[table["status"] == "failed"].iloc[0]
    assert failed["error"].startswith(WORKER_CRASH) and failed["source"] in first_series

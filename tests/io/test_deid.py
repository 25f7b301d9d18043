"""De-identified derived DICOM (PS3.15 Basic Profile), keyed patient hashes and the project secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from medbench.cli import app
from medbench.io import write_ct_series, write_derived_image
from medbench.io.deid import Deidentifier
from medbench.utils.files import hash_id, project_secret

IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "InstitutionName",
               "InstitutionalDepartmentName", "ReferringPhysicianName", "AccessionNumber", "StudyID",
               "StationName", "DeviceSerialNumber", "StudyDate", "SeriesDate", "ContentDate", "StudyTime")
SECRET = "unit-test-secret-Zq81"


def _expected_uid(secret: bytes, old: str) -> str:
    """The remapping written from its definition: 2.25.<first 128 bits of HMAC-SHA256(secret, 'uid:'+old)>."""
    d = hmac.new(secret, f"uid:{old}".encode(), hashlib.sha256).digest()[:16]
    return f"2.25.{int.from_bytes(d, 'big')}"


def _source_values(ds: pydicom.Dataset) -> dict[str, str]:
    return {k: str(ds.get(k)) for k in IDENTIFYING if str(ds.get(k, "") or "").strip()}


def test_deidentified_xray_has_none_of_the_source_identity(tmp_path, pydicom_data_dir) -> None:
    src_path = pydicom_data_dir / "RG1_UNCR.dcm"
    if not src_path.exists():
        pytest.skip("RG1_UNCR.dcm not in pydicom-data")
    src = pydicom.dcmread(src_path)
    secret = b"k1"
    deid = Deidentifier(secret=secret)
    pix = np.zeros((16, 16), np.float32)
    outs = [write_derived_image(pix, str(src_path), tmp_path / f"o{i}.dcm", description="test", uid_key=f"u{i}",
                                deidentify=deid) for i in range(2)]
    values = _source_values(src)
    assert {"PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber",
            "ReferringPhysicianName", "OtherPatientIDs"} <= set(values)
    for out in outs:
        ds = pydicom.dcmread(out)
        raw = out.read_bytes()
        for kw, value in values.items():
            assert str(ds.get(kw, "") or "") != value, kw
            if len(value) >= 4:
                assert value.encode() not in raw, (kw, value)
        assert not any(e.tag.is_private for e in ds.iterall())
        assert not any(e.VR in ("DA", "TM", "DT") and e.value for e in ds.iterall())
        assert ds.PatientIdentityRemoved == "YES" and "Basic Profile" in ds.DeidentificationMethod
        assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113108"]
        assert ds.Manufacturer == src.Manufacturer  # kept: the vendor is what harmonization acts on
        # UIDs: the source's are gone, the remapped ones follow the keyed definition
        for uid in (src.StudyInstanceUID, src.SeriesInstanceUID, src.SOPInstanceUID):
            assert uid.encode() not in raw
        assert ds.StudyInstanceUID == _expected_uid(secret, src.StudyInstanceUID)
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == _expected_uid(secret, src.SOPInstanceUID)
        assert ds.SOPClassUID == src.SOPClassUID  # a class UID, not an instance: kept
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    a, b = (pydicom.dcmread(o) for o in outs)
    assert a.StudyInstanceUID == b.StudyInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID
    other = Deidentifier(secret=b"k2").uid(src.StudyInstanceUID)
    assert other != a.StudyInstanceUID  # the mapping depends on the key


def test_deidentified_ct_series_keeps_its_uid_structure(tmp_path, ct_small_path) -> None:
    src = pydicom.dcmread(ct_small_path)
    deid = Deidentifier(secret=b"k1")
    vol = np.zeros((3, 8, 8), np.float32)
    paths = write_ct_series(vol, tmp_path, reference=ct_small_path, description="t", spacing=(1.0, 1.0, 1.0),
                            deidentify=deid)
    sets = [pydicom.dcmread(p) for p in paths]
    assert len({d.StudyInstanceUID for d in sets}) == 1 and len({d.SeriesInstanceUID for d in sets}) == 1
    assert sets[0].StudyInstanceUID == _expected_uid(b"k1", src.StudyInstanceUID)
    assert sets[0].FrameOfReferenceUID == _expected_uid(b"k1", src.FrameOfReferenceUID)
    for d in sets:
        assert d.PatientIdentityRemoved == "YES" and str(d.PatientName) == ""
        assert d.PatientID == hash_id(src.PatientID, salt="patient") != src.PatientID
        assert "PatientBirthDate" not in d or not d.PatientBirthDate


def test_hash_id_is_an_hmac_keyed_with_the_secret(monkeypatch) -> None:
    monkeypatch.setenv("MEDBENCH_SECRET", "alpha")
    a = hash_id("1234567")
    assert a == hmac.new(b"alpha", b"medbench:1234567", hashlib.sha256).hexdigest()[:32]
    monkeypatch.setenv("MEDBENCH_SECRET", "beta")
    assert hash_id("1234567") != a and len(a) == 32
    assert hash_id(None) == "" and hash_id(float("nan")) == ""


def test_secret_file_is_created_once_and_private(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MEDBENCH_SECRET", raising=False)
    path = tmp_path / "cfg" / "secret"
    monkeypatch.setenv("MEDBENCH_SECRET_FILE", str(path))
    first = project_secret()
    assert path.exists() and (os.stat(path).st_mode & 0o777) == 0o600 and len(first) == 64
    assert project_secret() == first  # read back, not re-created
    assert not [p for p in path.parent.iterdir() if p.name != "secret"]  # no temp file left


def _all_bytes(folder: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in folder.rglob("*") if p.is_file()]


def test_cli_deidentify_writes_no_identity_and_no_secret(tmp_path, monkeypatch, ct_small_path) -> None:
    monkeypatch.setenv("MEDBENCH_SECRET", SECRET)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(ct_small_path, src / "ct.dcm")
    out = tmp_path / "den"
    res = CliRunner().invoke(app, ["denoise", "apply", str(src), "--out", str(out), "--denoiser", "gaussian",
                                   "--allow-noise-increase", "--deidentify"])
    assert res.exit_code == 0, (res.output, res.exception)
    source = pydicom.dcmread(ct_small_path)
    (dcm,) = list(out.rglob("*.dcm"))
    ds = pydicom.dcmread(dcm)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.StudyInstanceUID == _expected_uid(SECRET.encode(), source.StudyInstanceUID)
    assert "deidentified" in json.loads(next(out.rglob("done.json")).read_text())
    for kw, value in _source_values(source).items():
        if len(value) >= 4:
            assert value.encode() not in dcm.read_bytes(), kw
    for p, raw in _all_bytes(out):
        assert SECRET.encode() not in raw, p


def test_ingest_hash_uids_keeps_raw_uids_out_of_the_tables(tmp_path, monkeypatch, ct_small_path) -> None:
    import pandas as pd

    monkeypatch.setenv("MEDBENCH_SECRET", SECRET)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(ct_small_path, src / "ct.dcm")
    raw = pydicom.dcmread(ct_small_path)
    out = tmp_path / "run"
    args = ["ingest", str(src), "--out", str(out), "--no-progress", "-j", "1"]
    for _ in range(2):  # the resumed second run must not hash the hashes again
        res = CliRunner().invoke(app, [*args, "--hash-uids"])
        assert res.exit_code == 0, res.output
        man = pd.read_parquet(out / "manifest.parquet")
        for col, kw in (("sop_uid", "SOPInstanceUID"), ("series_uid", "SeriesInstanceUID"),
                        ("study_uid", "StudyInstanceUID")):
            digest = hmac.new(SECRET.encode(), f"uid:{raw.get(kw)}".encode(), hashlib.sha256).hexdigest()[:32]
            assert man[col].tolist() == [f"uidh-{digest}"]
        for p, data in _all_bytes(out):
            assert str(raw.SOPInstanceUID).encode() not in data and SECRET.encode() not in data, p
    res = CliRunner().invoke(app, args)  # without the option the raw UIDs come back (rows rescanned)
    assert res.exit_code == 0 and pd.read_parquet(out / "manifest.parquet")["sop_uid"].tolist() == [
        str(raw.SOPInstanceUID)]


def test_harmonize_apply_deidentify(tmp_path, monkeypatch, synthetic_cxr_dir) -> None:
    import pandas as pd

    from harmonization.xray.gdce import GDCEConfig, save_predictor
    from harmonization.xray.predictor import CurvePredictor

    monkeypatch.setenv("MEDBENCH_SECRET", SECRET)
    widths = (4, 8, 8, 8, 16)
    model = save_predictor({"*": CurvePredictor(input_size=32, widths=widths)}, tmp_path / "m.pt",
                           GDCEConfig(input_size=32, widths=widths))
    src = tmp_path / "in"
    src.mkdir()
    files = sorted((Path(synthetic_cxr_dir) / "images").rglob("*.dcm"))[:2]
    for p in files:
        shutil.copy(p, src / p.name)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["harmonize", "apply", str(src), "--model", str(model), "--out", str(out),
                                   "--workers", "1", "--deidentify"])
    assert res.exit_code == 0, (res.output, res.exception)
    log = pd.read_csv(out / "harmonize_log.csv")
    assert log["deidentified"].all()
    for p in files:
        a, b = pydicom.dcmread(p), pydicom.dcmread(out / p.name)
        assert b.PatientIdentityRemoved == "YES" and b.PatientID != a.PatientID
        assert b.StudyInstanceUID == _expected_uid(SECRET.encode(), a.StudyInstanceUID)
    for p, raw in _all_bytes(out):
        assert SECRET.encode() not in raw, p

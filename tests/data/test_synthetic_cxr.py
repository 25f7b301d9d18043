"""In-memory synthetic radiographs: determinism per uid, metadata, vendor looks, lesion signal."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medbench.data.synthetic import (
    VENDOR_INVERSES,
    VENDORS,
    cxr_records,
    make_cxr,
    render_cxr_linear,
)
from medbench.data.synthetic_cxr import lesion_center
from medbench.errors import InputError


def test_same_seed_identical_and_other_seed_differs() -> None:
    a, ma = make_cxr(6, size=64, seed=3)
    b, mb = make_cxr(6, size=64, seed=3)
    c, _ = make_cxr(6, size=64, seed=4)
    np.testing.assert_array_equal(a, b)
    assert ma.equals(mb)
    assert np.abs(a - c).mean() > 0.01
    assert a.dtype == np.float32 and a.shape == (6, 64, 64)
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_same_uid_same_image_regardless_of_n() -> None:
    small, ms = make_cxr(5, size=48, seed=1)
    big, mb = make_cxr(12, size=48, seed=1)
    np.testing.assert_array_equal(small, big[:5])
    assert ms.equals(mb.iloc[:5])
    # rendering one record alone (out of order) gives the same pixels as in the batch
    rec = cxr_records(12, seed=1)[9]
    from medbench.data.synthetic import render_cxr

    np.testing.assert_array_equal(render_cxr(rec, size=48, seed=1), big[9])


def test_metadata_ranges_balance_and_patients() -> None:
    _, meta = make_cxr(0, size=32)
    assert list(meta.columns) == ["uid", "patient_id", "label", "sex", "age", "vendor"]
    recs = cxr_records(600, seed=0)
    from medbench.data.synthetic_cxr import records_frame

    m = records_frame(recs)
    assert m["uid"].is_unique
    assert 0.42 < m["label"].mean() < 0.58
    assert set(m["sex"]) == {"M", "F"} and 0.4 < (m["sex"] == "M").mean() < 0.6
    assert m["age"].between(18, 90).all() and 45 < m["age"].mean() < 65
    assert set(m["vendor"]) == set(VENDORS)
    assert 0.3 < (m["vendor"] == "RefVendor").mean() < 0.5
    per_patient = m.groupby("patient_id")
    assert (per_patient.size() > 1).sum() >= 50  # several images per patient for many patients
    # a patient's images share sex, age and label
    assert (per_patient[["sex", "age", "label"]].nunique() == 1).all().all()
    skew = records_frame(cxr_records(400, seed=0, lesion_prob=0.2))
    assert 0.12 < skew["label"].mean() < 0.28


def test_forced_vendor_is_curve_of_noisy_linear_and_inverts_to_the_reference() -> None:
    ref, _ = make_cxr(4, size=64, seed=2, vendor="RefVendor")
    for vendor in ("VendorPow", "VendorLog", "VendorInvS", "VendorSig"):
        img, meta = make_cxr(4, size=64, seed=2, vendor=vendor)
        lin, meta_lin = make_cxr(4, size=64, seed=2, vendor=vendor, apply_vendor=False)
        assert (meta["vendor"] == vendor).all() and meta.equals(meta_lin)
        look = VENDORS[vendor]
        # the detector noise lives in the linear signal, before the vendor's curve
        resid = VENDOR_INVERSES[look.curve](img) - lin
        inner = (lin > 0.05) & (lin < 0.95)  # away from clipping
        assert abs(float(resid[inner].mean())) < 0.002
        assert float(resid[inner].std()) == pytest.approx(look.noise, rel=0.1)
        # same uid, same exposure: undoing the vendor curve gives the reference image back
        np.testing.assert_allclose(VENDOR_INVERSES[look.curve](img), ref, atol=1e-3)
    ref_lin, _ = make_cxr(4, size=64, seed=2, vendor="RefVendor", apply_vendor=False)
    np.testing.assert_array_equal(ref_lin, lin)  # the linear image does not depend on the vendor


def test_lesion_is_the_only_difference_and_lies_in_a_lung() -> None:
    recs = [r for r in cxr_records(80, seed=5) if r.label][:8]
    assert len(recs) == 8
    size = 96
    for rec in recs:
        pos = render_cxr_linear(rec, size=size, seed=5)
        neg = render_cxr_linear(dataclasses.replace(rec, label=0), size=size, seed=5)
        diff = pos - neg
        assert diff.min() >= -1e-6  # the lesion only adds attenuation
        assert 0.05 < diff.max() < 0.4  # visible but far from a saturated artefact
        iy, ix = np.unravel_index(np.argmax(diff), diff.shape)
        cx, cy = lesion_center(rec.anatomy)
        # the peak sits near the lesion centre (normalised coords -> pixels), within the jitter
        assert abs(ix - (cx + 1) / 2 * size) < 0.1 * size and abs(iy - (cy + 1) / 2 * size) < 0.1 * size
        assert (diff > 0.02).mean() < 0.08  # a local finding, not a global change


def test_bad_arguments_raise_input_error() -> None:
    with pytest.raises(InputError, match="vendor"):
        make_cxr(2, size=32, vendor="Acme")
    with pytest.raises(InputError, match="lesion_prob"):
        make_cxr(2, size=32, lesion_prob=1.5)
    with pytest.raises(InputError, match="size"):
        make_cxr(2, size=8)

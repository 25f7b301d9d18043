"""Artifacts at native size, and the checks that say when audit numbers mean nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from confounders.audit_checks import chance_warnings, ci_width_warnings, legibility_warnings
from confounders.base import create_confounder
from confounders.injection import inject


def test_native_tag_is_drawn_at_1024_and_resized_with_the_image() -> None:
    tag = create_confounder("paper-tag")
    flat = torch.full((1, 1, 64, 64), 0.3)
    out = inject(tag, flat, ["a"], np.array([True]))
    # independent: draw on the 1024-px image, then the loaders' antialiased bilinear resize
    big = tag(torch.full((1, 1, 1024, 1024), 0.3), ["a"])
    expected = F.interpolate(big, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(out, expected, atol=1e-5)
    assert float(out.max()) > 0.35  # the 4-px glyph is still there, faint
    rnd = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.5
    out = inject(tag, rnd, ["a"], np.array([True]))
    far = torch.ones(64, 64, dtype=torch.bool)
    far[8:22, 8:22] = False  # the tag's ink lies in 200-290 of 1024 px = 12.5-18 px
    assert torch.equal(out[0, 0][far], rnd[0, 0][far]), "pixels away from the tag are untouched"


def test_native_lowpass_removes_little_at_small_sizes_and_noise_stays_per_pixel() -> None:
    lp = create_confounder("paper-lowpass")
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    native = inject(lp, x, ["a", "b"], np.array([True, True]))
    working = inject(lp, x, ["a", "b"], np.array([True, True]), scale="working")
    assert float((native - x).abs().mean()) < 0.2 * float((working - x).abs().mean())
    noise = create_confounder("paper-noise")
    assert torch.equal(inject(noise, x, ["a", "b"], np.array([True, True])), noise(x, ["a", "b"]))


def test_legibility_warnings_follow_the_working_size() -> None:
    at128 = legibility_warnings(["paper-tag", "paper-lowpass", "paper-noise"], 128)
    assert {w["confounder"] for w in at128} == {"paper-tag", "paper-lowpass"}
    assert "8.0 px" in next(w["message"] for w in at128 if w["confounder"] == "paper-tag")  # 64 * 128 / 1024
    at1024 = legibility_warnings(["paper-tag", "paper-lowpass"], 1024)
    assert at1024 == []
    # the 1024-px cutoff of 250/512 of Nyquist is 0.977 of it at 512 px: still removes the corners
    assert legibility_warnings(["paper-lowpass"], 512) == []
    assert "nothing" in legibility_warnings(["paper-lowpass"], 256)[0]["message"]  # 1.95 > sqrt(2)


def test_chance_and_ci_width_warnings() -> None:
    rows = pd.DataFrame({
        "source": ["a"] * 2 + ["b"] * 2, "confounder": "tag", "p": [0.0, 0.5] * 2, "n_test": 40,
        "auc_clean": [0.55, 0.5, 0.9, 0.7], "auc_clean_lo": [0.45, 0.4, 0.8, 0.6],
        "auc_clean_hi": [0.65, 0.6, 0.95, 0.8],
        "auc_iid": 0.8, "auc_iid_lo": [0.5, 0.5, 0.7, 0.7], "auc_iid_hi": [0.95, 0.95, 0.9, 0.9]})
    chance = chance_warnings(rows)
    assert [w["source"] for w in chance] == ["a"]  # b's clean CI at the lowest p is above chance
    assert "did not learn the task" in chance[0]["message"]
    widths = ci_width_warnings(rows)
    assert [w["message"].split(" test set")[0] for w in widths] == ["the i.i.d."]  # mean width 0.325 > 0.2
    assert ci_width_warnings(rows.assign(auc_iid_lo=0.75, auc_iid_hi=0.85)) == []

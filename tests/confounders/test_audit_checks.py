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


def test_chance_warning_without_a_clean_set_or_cis() -> None:
    # the authors' sex files: no clean test set; at p = 0 training holds no shortcut, so o.o.d. AUC stands in
    rows = pd.DataFrame({"source": ["a", "a", "b", "b"], "confounder": "sex", "prevalence": [0.0, 1.0] * 2,
                         "auc_clean": np.nan, "auc_clean_lo": np.nan, "auc_ood": [0.48, 0.2, 0.8, 0.3],
                         "auc_ood_lo": [0.4, 0.1, 0.7, 0.2]})
    chance = chance_warnings(rows)
    assert [w["source"] for w in chance] == ["a"] and "o.o.d. AUC" in chance[0]["message"]
    assert chance_warnings(rows[rows.prevalence > 0]) == []  # at p = 1 the o.o.d. set is no task measure
    no_ci = rows.drop(columns=["auc_clean_lo", "auc_ood_lo"]).assign(auc_clean=[0.5, 0.5, 0.51, 0.5])
    assert [w["source"] for w in chance_warnings(no_ci)] == ["a"]  # n_boot = 0: the mean AUC vs 0.5


def test_audit_report_boxes_a_source_at_chance_and_names_prevalence(tmp_path) -> None:
    import re
    from types import SimpleNamespace

    from confounders.audit import WARNING_COLUMNS, AuditConfig, AuditResult
    from confounders.audit_report import CHANCE_TITLE, write_report
    from confounders.audit_stats import compare_sources, summarise

    rng = np.random.default_rng(0)
    rows = pd.DataFrame([{"unit": f"{s}{p}{k}", "source": s, "confounder": "tag", "p": p, "split": k,
                          "auc_iid": 0.9, "auc_ood": 0.9 - 0.5 * p + 0.01 * rng.random(), "auc_clean": c,
                          "auc_clean_lo": c - 0.1, "auc_clean_hi": c + 0.1, "gap": 0.5 * p, "n_test": 40}
                         for s, c in (("good", 0.9), ("dud", 0.45)) for p in (0.0, 1.0) for k in range(2)])
    warnings = pd.DataFrame(chance_warnings(rows), columns=WARNING_COLUMNS)
    result = AuditResult(tmp_path, rows, summarise(rows), compare_sources(rows, n_perm=10), warnings=warnings)
    data = SimpleNamespace(name="synthetic", meta=pd.DataFrame({"label": [1, 0], "uid": ["a", "b"]}),
                           images=torch.full((2, 1, 32, 32), 0.4))
    html = write_report(result, AuditConfig(confounders=["paper-tag"], ps=[0, 1], splits=2), data,
                        tmp_path / "r.html").read_text()
    boxes = re.findall(r"<div class='warnbox'[^>]*><strong>(.*?)</strong>(.*?)</div>", html, re.S)
    chance_box = [b for b in boxes if "did not learn" in b[1]]
    assert [b[0] for b in chance_box] == [CHANCE_TITLE] and "dud / tag" in chance_box[0][1]
    assert "good /" not in chance_box[0][1]
    assert "dud / tag: at chance on clean data" in html and "good&#x27;s o.o.d. AUC goes from" in html
    assert "<th>prevalence</th>" in html and "<th>p</th>" not in html  # not a p-value column
    assert list(result.summary.columns[:3]) == ["source", "confounder", "prevalence"]

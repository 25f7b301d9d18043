"""The robustness audit: artifact selection, splits, loaders, statistics, resume, CLI, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from confounders import audit as audit_mod
from confounders.audit import (
    AuditConfig,
    compare_sources,
    run_audit,
    select_confounded,
    summarise,
)
from confounders.audit_data import AuditData, find_split_csvs, load_nih_splits, patient_kfold
from confounders.audit_report import plain_summary
from confounders.base import create_confounder
from confounders.injection import inject
from medbench.errors import InputError, UnknownNameError

TINY_SOURCE = {"name": "random", "arch": "test_resnet", "label": "tiny"}


def _meta(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"uid": [f"u{i}" for i in range(n)], "patient_id": [f"p{i // 2}" for i in range(n)],
                         "label": rng.integers(0, 2, n)})


def test_select_confounded_exact_nested_and_positive_only() -> None:
    meta = _meta()
    n_pos = int(meta.label.sum())
    prev = np.zeros(len(meta), bool)
    for p in (0.0, 0.1, 0.2, 0.5, 0.8, 1.0):
        m = select_confounded(meta, p, key="tag", seed=0)
        assert m.sum() == round(p * n_pos)
        assert (meta.label[m] == 1).all()
        assert (m | ~prev).all(), "the set at a larger p contains the one at a smaller p"
        prev = m
        assert np.array_equal(m, select_confounded(meta.sample(frac=1, random_state=1).sort_index(), p, key="tag", seed=0))
    assert not np.array_equal(select_confounded(meta, 0.5, key="tag", seed=0),
                              select_confounded(meta, 0.5, key="tag", seed=1))


def test_inject_touches_only_masked_rows() -> None:
    imgs = torch.full((6, 1, 32, 32), 0.3)
    mask = np.array([1, 0, 1, 0, 0, 1], bool)
    out = inject(create_confounder("tag", size=300), imgs, [f"u{i}" for i in range(6)], mask)
    changed = (out != imgs).flatten(1).any(1).numpy()
    assert np.array_equal(changed, mask)


def test_patient_kfold_is_grouped_and_covers_everything() -> None:
    meta = _meta(101)
    folds = patient_kfold(meta, k=5, val_fraction=0.2, seed=3)
    tests = np.concatenate([f["test"] for f in folds])
    assert sorted(tests) == list(range(101))
    for f in folds:
        pats = {s: set(meta.patient_id.iloc[f[s]]) for s in ("train", "val", "test")}
        assert not (pats["train"] & pats["val"]) and not (pats["train"] & pats["test"]) and not (pats["val"] & pats["test"])
        assert len(f["train"]) + len(f["val"]) + len(f["test"]) == 101


def test_config_validation_and_yaml(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="p must"):
        AuditConfig(ps=[0.5, 1.2])
    with pytest.raises(UnknownNameError, match="did you mean 'paper-tag'"):
        AuditConfig(confounders=["paper-tog"])
    with pytest.raises(InputError, match="did you mean 'splits'"):
        AuditConfig.from_dict({"split": 3})
    with pytest.raises(InputError, match="data kind"):
        AuditConfig(data={"kind": "nhi"})
    cfg_file = tmp_path / "audit.yaml"
    cfg_file.write_text("sources: [random, {name: random, arch: resnet18, label: r18}]\n"
                        "confounders: [paper-lowpass, {name: tag, size: 128}]\nps: [1, 0, 0.5]\nsplits: 2\n")
    cfg = AuditConfig.from_yaml(cfg_file)
    assert cfg.ps == [0.0, 0.5, 1.0] and cfg.splits == 2
    assert [u.uid for u in audit_mod.units(cfg, 1)][:3] == [
        "random__paper-lowpass__p0.000__s0", "random__paper-lowpass__p0.500__s0", "random__paper-lowpass__p1.000__s0"]
    assert len(audit_mod.units(cfg, 2)) == 2 * 2 * 3 * 2


def _fake_results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for src, base in (("A", 0.3), ("B", 0.6)):
        for p in (0.0, 0.5, 1.0):
            for s in range(4):
                ood = base + 0.5 * (1 - p) * (1 - base) + rng.normal(0, 0.02)
                rows.append({"source": src, "confounder": "tag", "prevalence": p, "split": s, "auc_iid": 0.8 + 0.2 * p,
                             "auc_ood": ood, "auc_clean": 0.75 + rng.normal(0, 0.01), "gap": 0.8 + 0.2 * p - ood})
    return pd.DataFrame(rows)


def _unpaired_enumeration(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of Student's pooled t over every split of the pooled values into |a| and |b|."""
    import itertools

    pooled, na = np.concatenate([a, b]), len(a)

    def t(x: np.ndarray, y: np.ndarray) -> float:
        return stats.ttest_ind(x, y, equal_var=True).statistic

    t_obs = abs(t(a, b))
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), na):
        mask = np.zeros(len(pooled), bool)
        mask[list(idx)] = True
        hits += abs(t(pooled[mask], pooled[~mask])) >= t_obs * (1 - 1e-9)
        total += 1
    return hits / total


def test_headline_comparison_is_unpaired_and_reaches_significance_at_5_splits(
        caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(11)
    rows = []
    for src, mu in (("ImageNet", 0.40), ("RadImageNet", 0.70)):  # a clear effect: 0.3 AUC, sd 0.03
        for s in range(5):
            rows.append({"source": src, "confounder": "tag", "p": 0.5, "split": s, "auc_iid": 0.9,
                         "auc_ood": mu + rng.normal(0, 0.03), "auc_clean": 0.85, "gap": 0.0})
    res = pd.DataFrame(rows)
    c = compare_sources(res).iloc[0]
    a = res[res.source == "ImageNet"].auc_ood.to_numpy()
    b = res[res.source == "RadImageNet"].auc_ood.to_numpy()
    ref = _unpaired_enumeration(a, b)
    assert c.p_perm == pytest.approx(ref) and c.p_perm < 0.05
    assert c.p_perm == pytest.approx(2 / 252) and c.p_perm_min == pytest.approx(2 / 252) and c.p_perm > 0
    assert c.t == pytest.approx(stats.ttest_ind(a, b).statistic)
    # the paired sign-flip extra cannot go below 2/32 with 5 splits, whatever the effect
    assert c.p_paired == pytest.approx(2 / 32) and c.p_paired_min == pytest.approx(0.0625)
    assert not c.floor_above_alpha
    # 3 vs 3 splits: the smallest p is 2/20 = 0.1 > alpha; flagged and logged
    with caplog.at_level("WARNING", logger="confounders.audit_stats"):
        small = compare_sources(res[res.split < 3]).iloc[0]
    assert small.p_perm_min == pytest.approx(0.1) and small.floor_above_alpha
    assert small.p_perm == pytest.approx(_unpaired_enumeration(a[:3], b[:3]))
    assert any("cannot reach p < 0.05" in r.getMessage() for r in caplog.records)
    from confounders.audit_report import comparison_sentences, floor_warnings

    assert floor_warnings(pd.DataFrame([small]))
    assert "p = 0.0079" in comparison_sentences(pd.DataFrame([c]))[0]
    # unpaired: a source with a missing split still enters the headline test (5 vs 4)
    c54 = compare_sources(res.drop(index=res.index[(res.source == "RadImageNet") & (res.split == 4)])).iloc[0]
    assert (c54.n_a, c54.n_b, c54.n_splits) == (5, 4, 4)
    assert c54.p_perm == pytest.approx(_unpaired_enumeration(a, b[:4]))


def test_summary_and_source_comparison_match_scipy() -> None:
    res = _fake_results()
    summ = summarise(res)
    g = res[(res.source == "A") & (res.prevalence == 0.5)]
    row = summ[(summ.source == "A") & (summ.prevalence == 0.5)].iloc[0]
    assert row.auc_ood == pytest.approx(g.auc_ood.mean()) and row.auc_ood_sd == pytest.approx(g.auc_ood.std(ddof=1))
    assert row.n_splits == 4
    comp = compare_sources(res)
    c = comp[comp.prevalence == 0.5].iloc[0]
    a = res[(res.source == "A") & (res.prevalence == 0.5)].sort_values("split").auc_ood.to_numpy()
    b = res[(res.source == "B") & (res.prevalence == 0.5)].sort_values("split").auc_ood.to_numpy()
    assert c.p_ttest == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert c.mean_diff == pytest.approx((a - b).mean())
    # extra column: exact sign-flip permutation over 4 paired splits, all 16 flips
    d = a - b
    t_obs = d.mean() / (d.std(ddof=1) / 2)
    flips = np.array([[1 - 2 * ((k >> j) & 1) for j in range(4)] for k in range(16)])
    tn = (flips * d).mean(1) / ((flips * d).std(1, ddof=1) / 2)
    assert c.p_paired == pytest.approx(np.mean(np.abs(tn) >= abs(t_obs) - 1e-12))
    assert c.p_paired_min == pytest.approx(2 / 16)
    # headline: unpaired Student t over all C(8, 4) = 70 relabellings
    assert c.p_perm == pytest.approx(_unpaired_enumeration(a, b)) and c.p_perm_exact
    assert c.p_perm_min == pytest.approx(2 / 70) and not c.floor_above_alpha
    lines = plain_summary(summ)
    assert any(line.startswith("A's o.o.d. AUC goes from") and "learned the tag" in line for line in lines)
    flat = summ.assign(auc_ood=0.5)
    assert all("did not rely on the artifact" in line for line in plain_summary(flat))
    weak = flat.assign(auc_iid=0.55)
    assert all("learned little" in line for line in plain_summary(weak))


def test_nih_split_csv_loader(tmp_path: Path) -> None:
    from PIL import Image

    imgdir = tmp_path / "images"
    imgdir.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(12):
        arr = (rng.random((40, 40)) * 255).astype(np.uint8)
        name = f"{i:08d}_000.png"
        Image.fromarray(arr).save(imgdir / name)
        names.append(name)
    for k in range(2):
        d = tmp_path / "csv" / f"split_{k}"
        d.mkdir(parents=True)
        order = np.roll(np.arange(12), 4 * k)
        for s, rows in (("train", order[:6]), ("val", order[6:8]), ("test", order[8:])):
            pd.DataFrame({"path": [f"images/{names[i]}" for i in rows], "pid": [f"P{i // 2}" for i in rows],
                          "class": [i % 2 for i in rows]}).to_csv(d / f"{s}.csv")
    assert (tmp_path / "csv" / "split_0" / "train.csv").read_text().startswith(",path,pid,class")
    assert len(find_split_csvs(tmp_path / "csv")) == 2
    data = load_nih_splits(tmp_path / "csv", tmp_path, size=20)
    assert data.images.shape == (12, 1, 20, 20)
    assert list(data.meta.label) == [int(n[:8]) % 2 for n in data.meta.uid]
    for k, sp in enumerate(data.splits):
        test_uids = set(data.meta.uid.iloc[sp["test"]])
        assert test_uids == {names[i] for i in np.roll(np.arange(12), 4 * k)[8:]}
    # pixel values: the resized mean equals the original's mean (antialiased bilinear keeps it)
    i0 = int(data.meta.index[data.meta.uid == names[0]][0])
    orig = np.asarray(Image.open(imgdir / names[0]), dtype=np.float32) / 255
    assert abs(float(data.images[i0].mean()) - orig.mean()) < 0.01
    with pytest.raises(InputError, match="no complete split"):
        find_split_csvs(imgdir)


def test_dicom_folder_loader(tmp_path: Path) -> None:
    from confounders.audit_data import load_dicom_folder
    from medbench.data.synthetic import write_cxr_dataset
    from medbench.io.manifest import scan

    labels = write_cxr_dataset(tmp_path / "ds", 10, size=32, progress=False)
    res = scan(tmp_path / "ds", workers=1, progress=False)
    res.manifest.to_csv(tmp_path / "manifest.csv", index=False)
    data = load_dicom_folder(tmp_path / "manifest.csv", tmp_path / "ds" / "labels.csv", size=24, splits=5)
    assert data.images.shape == (10, 1, 24, 24) and float(data.images.max()) <= 1
    merged = data.meta.set_index("uid")["label"].sort_index()
    ref = labels.set_index("uid")["label"].astype(int).sort_index()
    assert merged.to_dict() == ref.to_dict()
    assert len(data.splits) == 5


def _tiny_cfg(**kw) -> AuditConfig:
    base = dict(sources=[TINY_SOURCE], confounders=[{"name": "tag", "size": 300, "font": "sans-bold"}],
                ps=[0.0, 1.0], splits=1, data={"kind": "synthetic", "n": 60, "size": 32},
                train={"epochs": 1, "batch_size": 16, "device": "cpu"}, n_boot=20)
    base.update(kw)
    return AuditConfig(**base)


def test_audit_writes_rows_and_resumes_per_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _tiny_cfg()
    res = run_audit(cfg, tmp_path)
    assert len(res.results) == 2 and set(res.results.prevalence) == {0.0, 1.0}
    row = json.loads((tmp_path / "units" / "tiny__tag__p1.000__s0" / "row.json").read_text())
    assert row["gap"] == pytest.approx(row["auc_iid"] - row["auc_ood"])
    assert row["auc_iid_lo"] <= row["auc_iid"] <= row["auc_iid_hi"]
    assert row["n_confounded_train"] == int(row["n_confounded_train"]) > 0
    assert (tmp_path / "report.html").read_text().count("<img") == 2
    assert pd.read_csv(tmp_path / "results.csv").shape[0] == 2
    # a rerun skips finished units; a missing unit is the only one recomputed
    calls: list[str] = []
    real = audit_mod.run_unit
    monkeypatch.setattr(audit_mod, "run_unit", lambda u, *a, **k: calls.append(u.uid) or real(u, *a, **k))
    run_audit(cfg, tmp_path, report=False)
    assert calls == []
    (tmp_path / "units" / "tiny__tag__p0.000__s0" / "predictions.parquet").unlink()  # a unit with a file lost
    again = run_audit(cfg, tmp_path, report=False)
    assert calls == ["tiny__tag__p0.000__s0"]
    assert again.results.loc[again.results.prevalence == 1.0, "auc_ood"].item() == row["auc_ood"]


def test_unit_folders_hold_sets_and_predictions_that_reproduce_the_summary(tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from medbench.eval.metrics import keras_auc

    cfg = _tiny_cfg(ps=[0.5], n_boot=0, data={"kind": "synthetic", "n": 80, "size": 32})
    res = run_audit(cfg, tmp_path, report=False)
    folder = tmp_path / "units" / "tiny__tag__p0.500__s0"
    assert "tag" in folder.name and "p0.500" in folder.name
    sets = pd.read_parquet(folder / "sets.parquet")
    pred = pd.read_parquet(folder / "predictions.parquet")
    assert list(sets.columns[:5]) == ["uid", "patient_id", "label", "set", "confounded"] and "sex" in sets
    assert list(pred.columns) == ["uid", "set", "label", "prob"]
    assert set(sets.set) == {"train", "val", "test_iid", "test_ood", "test_clean"}
    _assert_tag_semantics(sets, 0.5)
    row = res.results.iloc[0]
    for name, col in (("test_iid", "auc_iid"), ("test_ood", "auc_ood"), ("test_clean", "auc_clean")):
        part = pred[pred.set == name]
        assert sorted(part.uid) == sorted(sets.uid[sets.set == name])
        assert row[col] == pytest.approx(roc_auc_score(part.label, part.prob), abs=1e-12)
        probs = np.column_stack([1 - part.prob, part.prob])
        assert row[f"{col}_keras"] == pytest.approx(keras_auc(part.label.to_numpy(), probs, num_thresholds=200))
    assert res.summary.iloc[0]["auc_ood"] == pytest.approx(row["auc_ood"])
    assert {"auc_ood_keras", "auc_iid_keras"} <= set(res.summary.columns)
    assert row["n_train"] == (sets.set == "train").sum()


def _assert_tag_semantics(sets: pd.DataFrame, p: float) -> None:
    """Fraction p of positives confounded in train/val/test_iid, no negative; o.o.d.: every
    negative and no positive; clean: none."""
    for name in ("train", "val", "test_iid"):
        part = sets[sets.set == name]
        pos = part[part.label == 1]
        assert pos.confounded.sum() == round(p * len(pos)), name
        assert not part[part.label == 0].confounded.any(), name
    ood = sets[sets.set == "test_ood"]
    assert ood.confounded.to_numpy().tolist() == (ood.label == 0).tolist()
    assert not sets[sets.set == "test_clean"].confounded.any()
    assert set(ood.uid) == set(sets.uid[sets.set == "test_iid"]) == set(sets.uid[sets.set == "test_clean"])


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1.0])
def test_sets_table_follows_the_tag_protocol(p: float) -> None:
    from confounders.audit import Unit, sets_table, unit_plan

    meta = _meta(300, seed=3)
    data = AuditData(torch.zeros(300, 1, 8, 8), meta, patient_kfold(meta, k=5, seed=0))
    cfg = AuditConfig(confounders=["paper-tag"], ps=[p], splits=5)
    unit = Unit(TINY_SOURCE, "paper-tag", p, 1)
    _assert_tag_semantics(sets_table(unit, data, *unit_plan(unit, cfg, data)), p)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.8, 1.0])
def test_sets_table_follows_the_sex_protocol(p: float) -> None:
    from confounders.audit import Unit, sets_table, unit_plan

    rng = np.random.default_rng(4)
    meta = _meta(1200, seed=4)
    meta["sex"] = np.where(rng.random(1200) < 0.5, "F", "M")
    meta["View Position"] = np.where(rng.random(1200) < 0.85, "PA", "AP")
    data = AuditData(torch.zeros(1200, 1, 8, 8), meta, [])
    cfg = AuditConfig(confounders=["sex"], ps=[p], splits=5)
    unit = Unit(TINY_SOURCE, "sex", p, 3)
    sets = sets_table(unit, data, *unit_plan(unit, cfg, data))
    assert list(sets.columns) == ["uid", "patient_id", "label", "set", "confounded", "sex"]
    view = dict(zip(meta.uid, meta["View Position"]))
    assert all(view[u] == "PA" for u in sets.uid), "only PA views"
    assert (sets.confounded == (sets.sex == "F")).all()
    for name in ("train", "val", "test_iid"):
        part = sets[sets.set == name]
        assert (part[part.label == 0].sex == "M").all(), f"{name}: negatives all male at p={p}"
        pos = part[part.label == 1]
        assert len(pos) > 0 and abs((pos.sex == "F").mean() - p) <= 0.5 / len(pos) + 1e-9
    ood = sets[sets.set == "test_ood"]
    assert set(zip(ood.label, ood.sex)) == {(1, "M"), (0, "F")}
    # o.o.d. = every PA male positive and female negative of the split's test patients
    test_pat = set(ood.patient_id) | set(sets.patient_id[sets.set.isin(["test_iid", "test_clean"])])
    pool = meta[meta.patient_id.isin(test_pat) & (meta["View Position"] == "PA")]
    expect = pool[((pool.label == 1) & (pool.sex == "M")) | ((pool.label == 0) & (pool.sex == "F"))]
    assert set(expect.uid) == set(ood.uid)
    clean = sets[sets.set == "test_clean"]
    for cls in (0, 1):
        part = clean[clean.label == cls]
        assert len(part) > 0 and abs((part.sex == "F").mean() - 0.5) <= 0.5 / len(part) + 1e-9
    train_pat = set(sets.patient_id[sets.set.isin(["train", "val"])])
    assert not train_pat & test_pat


def test_cli_confounders_and_audit(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medbench.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["confounders"])
    assert out.exit_code == 0, out.output
    for word in ("MICCAT", "environment", "tags", "paper-tag", "lowpass", "sex"):
        assert word in out.output
    cfg = tmp_path / "a.yaml"
    cfg.write_text("confounders: [{name: laterality, size: 200}]\nn_boot: 10\n")
    out = runner.invoke(app, ["audit", "-c", str(cfg), "-o", str(tmp_path / "run"), "-s", "random:test_resnet",
                              "--p", "0", "--p", "1", "--splits", "1", "--n", "50", "--size", "32",
                              "--epochs", "1", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    res = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(res.source) == ["random:test_resnet"] * 2 and list(res.confounder) == ["laterality"] * 2
    assert "auc_ood" in out.output or "0." in out.output


@pytest.mark.slow
def test_perfect_tag_is_learned_and_ood_auc_falls_with_p(tmp_path: Path) -> None:
    """End to end on the embedded data: a tag on a fraction p of positives becomes a shortcut."""
    torch.set_num_threads(1)
    cfg = AuditConfig(sources=[TINY_SOURCE],
                      confounders=[{"name": "tag", "size": 256, "position": [120, 120], "font": "sans-bold"}],
                      ps=[0.0, 0.5, 1.0], splits=1, data={"kind": "synthetic", "n": 300, "size": 64},
                      train={"epochs": 6, "batch_size": 16, "device": "cpu"}, n_boot=100)
    res = run_audit(cfg, tmp_path, report=False).results.set_index("prevalence")
    assert res.loc[1.0, "auc_iid"] > 0.95
    assert res.loc[1.0, "auc_ood"] < 0.2
    # monotone fall within CI: each o.o.d. AUC is at most the previous one's upper CI bound
    ood = res["auc_ood"].to_numpy()
    hi = res["auc_ood_hi"].to_numpy()
    assert all(ood[i + 1] <= hi[i] for i in range(len(ood) - 1))
    assert ood[0] - ood[-1] > 0.25
    # the clean test set has no artifact: its AUC does not collapse like the o.o.d. one
    assert res.loc[1.0, "auc_clean"] > res.loc[1.0, "auc_ood"] + 0.25


def test_sampled_confounder_units_follow_the_sex_protocol() -> None:
    from confounders.audit import Unit, unit_sets
    from confounders.sampled import build_prevalence_splits

    meta = _meta(400, seed=5)
    meta["sex"] = np.where(np.random.default_rng(1).random(400) < 0.5, "F", "M")
    data = AuditData(torch.zeros(400, 1, 8, 8), meta, [])
    cfg = AuditConfig(confounders=["sex"], ps=[0.8], splits=5)
    rows, masks = unit_sets(Unit(TINY_SOURCE, "sex", 0.8, 2), cfg, data)
    ref = build_prevalence_splits(meta, p=0.8, column="sex", group="F", n_splits=5, seed=0)[2]
    assert np.array_equal(rows["train"], ref.train.index.to_numpy())
    ood = meta.iloc[rows["ood"]]
    assert set(zip(ood.label, ood.sex)) == {(1, "M"), (0, "F")}
    pos = meta.iloc[rows["train"]].query("label == 1")
    assert (pos.sex == "F").sum() == round(0.8 * len(pos))
    assert not any(m.any() for m in masks.values())  # no pixel artifact for a sampled confounder


def test_demo_audit_small(tmp_path: Path) -> None:
    from confounders.demo_audit import run_demo_audit

    two = (TINY_SOURCE, {"name": "random", "arch": "test_resnet", "label": "tiny-b"})
    res = run_demo_audit(tmp_path, n=60, size=32, ps=(0.0, 1.0), sources=two, splits=2, epochs=1, device="cpu")
    assert len(res.results) == 2 * 2 * 2
    assert set(res.comparisons.columns) >= {"p_perm", "p_ttest", "mean_diff"}
    assert len(res.comparisons) == 2 and res.comparisons.n_splits.eq(2).all()
    html = res.report_path.read_text()
    from confounders.audit_report import CHANCE_TITLE

    at_chance = set(res.warnings.source[res.warnings.kind == "chance"])
    assert "tag-R" in html and ("o.o.d. AUC goes from" in html) == (at_chance != {"tiny", "tiny-b"})
    assert (CHANCE_TITLE in html) == bool(at_chance)


def test_unit_datasets_follow_the_protocol_with_paper_noise_baseline() -> None:
    from confounders.audit import Unit, unit_datasets

    meta = _meta(60, seed=2)
    imgs = 0.3 + 0.4 * torch.rand(60, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    data = AuditData(imgs, meta, patient_kfold(meta, k=5, seed=0))
    cfg = AuditConfig(confounders=["paper-noise"], ps=[0.5], splits=5)
    sets, n_conf = unit_datasets(Unit(TINY_SOURCE, "paper-noise", 0.5, 0), cfg, data)
    low, ref = create_confounder("paper-noise"), create_confounder("paper-noise-reference")
    by_uid = {u: i for i, u in enumerate(meta.uid)}
    n_low = {}
    for name, ds in sets.items():
        uids = list(ds.meta.uid)
        orig = imgs[[by_uid[u] for u in uids]]
        is_low = torch.isclose(ds.images, low(orig, uids)).flatten(1).all(1).numpy()
        is_ref = torch.isclose(ds.images, ref(orig, uids)).flatten(1).all(1).numpy()
        labels = ds.meta.label.to_numpy()
        n_low[name] = int(is_low.sum())
        if name == "clean":  # the authors' clean test images are the originals
            assert torch.equal(ds.images, orig)
            continue
        assert (is_low ^ is_ref).all(), f"{name}: every image has exactly one noise level"
        if name == "ood":
            assert np.array_equal(is_low, labels == 0)
        else:
            assert not is_low[labels == 0].any() and is_low.sum() == round(0.5 * (labels == 1).sum())
    assert n_conf == n_low["train"]

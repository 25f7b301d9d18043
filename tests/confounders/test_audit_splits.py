"""The authors' split protocol: one fixed test set + GroupShuffleSplit train/val, and their files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from confounders.audit_data import find_split_csvs, load_nih_splits, make_splits, patient_fixed_test
from medbench.errors import InputError

from .nih_folder import write_nih_folder, write_sex_folders


def _meta(n_patients: int = 97, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pid = np.repeat(np.arange(n_patients), rng.integers(1, 4, n_patients))
    return pd.DataFrame({"uid": [f"u{i}" for i in range(len(pid))], "patient_id": [f"p{p}" for p in pid],
                         "label": rng.integers(0, 2, len(pid))})


def test_fixed_test_set_and_group_shuffle_val() -> None:
    meta = _meta()
    splits = patient_fixed_test(meta, k=5, val_fraction=0.15, test_fraction=0.25, seed=0)
    assert len(splits) == 5
    pid = meta.patient_id.to_numpy()
    n_groups = len(set(pid))
    test = splits[0]["test"]
    # scikit-learn's GroupShuffleSplit: ceil(test_size * n_groups) groups go to the held-out side
    assert len(set(pid[test])) == math.ceil(0.25 * n_groups)
    vals = []
    for sp in splits:
        assert np.array_equal(sp["test"], test), "one fixed test set for every split"
        sets = [set(pid[sp[s]]) for s in ("train", "val", "test")]
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
        assert len(sp["train"]) + len(sp["val"]) + len(sp["test"]) == len(meta)
        assert len(sets[1]) == math.ceil(0.15 * (n_groups - len(set(pid[test]))))
        vals.append(frozenset(sets[1]))
    assert len(set(vals)) == 5, "the train/val splits differ"
    kfold = make_splits(meta, scheme="kfold", k=5, seed=0)
    assert len({frozenset(sp["test"]) for sp in kfold}) == 5, "k-fold (the option) moves the test set"
    with pytest.raises(InputError, match="split scheme"):
        make_splits(meta, scheme="kfolds")


def test_nih_loader_reads_the_authors_files(tmp_path: Path) -> None:
    paths = write_nih_folder(tmp_path, n_patients=12, size=24)
    csvs = find_split_csvs(paths["csv"])
    assert len(csvs) == 2 and all(c["test"] == paths["csv"] / "test.csv" for c in csvs)
    data = load_nih_splits(paths["csv"], paths["images"], size=16)
    entry = pd.read_csv(paths["entry"]).set_index("Image Index")
    assert data.images.shape == (24, 1, 16, 16)
    for uid, label, sex in zip(data.meta.uid, data.meta.label, data.meta.sex):
        assert label == int(entry.loc[uid, "Finding Labels"] != "No Finding")  # "YES" is the positive class
        assert sex == entry.loc[uid, "Patient Gender"]
    test = set(pd.read_csv(paths["csv"] / "test.csv", index_col=0).path)
    for k, sp in enumerate(data.splits, start=1):
        assert set(data.meta.uid.iloc[sp["test"]]) == test
        assert set(data.meta.uid.iloc[sp["val"]]) == set(pd.read_csv(paths["csv"] / f"val_fold{k}.csv").path)
    with pytest.raises(InputError, match="image-root"):
        load_nih_splits(paths["csv"], tmp_path / "nowhere", size=16)


def test_cli_source_matters_preset_on_an_nih_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from confounders.audit_presets import PAPER_FIGURE, SOURCE_MATTERS
    from medbench.cli import app

    paths = write_nih_folder(tmp_path / "nih", n_patients=16, size=32)
    base = ["audit", "--preset", "source-matters", "--data", "nih", "--image-root", str(paths["images"]),
            "--csv-dir", str(paths["csv"]), "-o", str(tmp_path / "run")]
    runner = CliRunner()
    out = runner.invoke(app, base)
    assert out.exit_code != 0 and "--imagenet-weights" in str(out.exception or out.output)
    out = runner.invoke(app, [*base, "-s", "random:test_resnet", "--confounder", "paper-tag", "--p", "0.5",
                              "--p", "0.8", "--splits", "2", "--size", "32", "--epochs", "1",
                              "--batch-size", "8", "--n-boot", "20", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    config = __import__("yaml").safe_load((tmp_path / "run" / "config.yaml").read_text())
    cfg = {**config["settings"], **config["resolved"]}
    for key in ("drop_rate", "augment", "n_perm", "preset"):  # the recipe comes from the preset
        assert cfg[key] == SOURCE_MATTERS[key]
    assert cfg["train"]["optimizer"] == "adam" and cfg["train"]["batch_size"] == 8  # flags override
    sets = pd.read_parquet(next((tmp_path / "run" / "units").glob("*p0.500*s0/sets.parquet")))
    test = set(pd.read_csv(paths["csv"] / "test.csv", index_col=0).path)
    assert set(sets.uid[sets.set == "test_iid"]) == test  # the authors' fixed test set
    assert set(sets.uid[sets.set == "train"]) == set(pd.read_csv(paths["csv"] / "train_fold1.csv").path)
    paper = pd.read_csv(tmp_path / "run" / "paper_comparison.csv")
    assert list(paper.source) == ["random", "random"] and list(paper.prevalence) == [0.5, 0.8]
    assert list(paper.paper_auc_ood) == [PAPER_FIGURE[("paper-tag", p)]["random"] for p in (0.5, 0.8)]
    summary = pd.read_csv(tmp_path / "run" / "summary.csv").set_index("prevalence")
    assert np.allclose(paper.auc_ood, summary.loc[[0.5, 0.8], "auc_ood"])
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Beside the paper" in html and "0.69" in html
    warnings = pd.read_csv(tmp_path / "run" / "warnings.csv")
    assert "legibility" in set(warnings.kind)  # the paper tag at 32 px is a 2-px glyph


def test_authors_sex_folders_share_the_test_csv_one_level_up(tmp_path: Path) -> None:
    for name in ("test.csv", "F_50/train_fold1.csv", "F_50/val_fold1.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(",path,class,pid,Patient Gender\n")
    (csvs,) = find_split_csvs(tmp_path / "F_50")
    assert csvs == {"test": tmp_path / "test.csv", "train": tmp_path / "F_50" / "train_fold1.csv",
                    "val": tmp_path / "F_50" / "val_fold1.csv"}


def test_sex_arm_reads_the_authors_gender_files(tmp_path: Path) -> None:
    """With ``<csv_dir>/gender/`` in the authors' layout the sex units train and test on those files:
    negatives all male at every p, female share of positives = p, o.o.d. = gender/test.csv."""
    from confounders.audit import AuditConfig, run_audit

    paths = write_nih_folder(tmp_path, n_patients=24, size=24, folds=2)
    gender = write_sex_folders(paths["csv"], paths["entry"], ps=(0, 50, 100), folds=2)
    cfg = AuditConfig(sources=[{"name": "random", "arch": "test_resnet", "label": "tiny"}], confounders=["sex"],
                      ps=[0.0, 0.5, 1.0], splits=2, n_boot=0, n_perm=10,
                      data={"kind": "nih", "csv_dir": str(paths["csv"]), "image_root": str(paths["images"]),
                            "size": 16},
                      train={"epochs": 1, "batch_size": 8, "device": "cpu"})
    res = run_audit(cfg, tmp_path / "run", report=False)
    sex_of = pd.read_csv(paths["entry"]).set_index("Image Index")["Patient Gender"]
    test = pd.read_csv(gender / "test.csv", index_col=0)
    for pct, p in ((0, 0.0), (50, 0.5), (100, 1.0)):
        for k in (1, 2):
            sets = pd.read_parquet(next((tmp_path / "run" / "units").glob(f"*sex*p{p:.3f}__s{k - 1}/sets.parquet")))
            train = pd.read_csv(gender / f"F_{pct}" / f"train_fold{k}.csv", index_col=0)
            tr = sets[sets.set == "train"]
            assert sorted(tr.uid) == sorted(train.path)
            assert sorted(sets.uid[sets.set == "val"]) == sorted(
                pd.read_csv(gender / f"F_{pct}" / f"val_fold{k}.csv", index_col=0).path)
            assert sorted(sets.uid[sets.set == "test_ood"]) == sorted(test.path)
            assert not {"test_iid", "test_clean"} & set(sets.set)  # the authors have the o.o.d. set only
            assert list(tr.label) == [int(c != "No Finding") for c in train.set_index("path").loc[tr.uid, "class"]]
            assert list(tr.sex) == [sex_of[u] for u in tr.uid]
            assert set(tr.sex[tr.label == 0]) == {"M"}  # negatives all male at every p
            both = pd.concat([tr, sets[sets.set == "val"]])
            pos = both[both.label == 1]
            n_f, n_m = (pos.sex == "F").sum(), (pos.sex == "M").sum()
            # the files draw all female positives times p and the training male positives times 1 - p
            all_f = ((sex_of == "F") & (pd.read_csv(paths["entry"]).set_index("Image Index")["Finding Labels"]
                                        != "No Finding")).sum()
            assert n_f == round(p * all_f) and (n_m == 0) == (p == 1.0)
            ood = sets[sets.set == "test_ood"]
            assert set(ood.sex[ood.label == 1]) == {"M"} and set(ood.sex[ood.label == 0]) == {"F"}
    rows = res.results.set_index(["prevalence", "split"])
    assert rows["auc_iid"].isna().all() and rows["auc_ood"].notna().all()
    with pytest.raises(InputError, match="p = 0, 0.5, 1, not 0.2"):
        run_audit(AuditConfig(**{**cfg.to_dict(), "ps": [0.2]}), tmp_path / "run2", report=False)

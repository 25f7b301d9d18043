"""The frequency-shortcut experiment across seeds and amplitudes: validation split, CIs, onset,
alignment rank correlation, resumable units."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from torch import nn

from transferability.shortcut_stats import alignment_rank_correlation, onset_amplitudes, summarise


def _table(rng: np.random.Generator, sources=("a", "b"), bands=("low", "mid", "high"), amps=(0.05, 0.15),
           seeds=(0, 1, 2, 3)) -> pd.DataFrame:
    rows = []
    for s in sources:
        for b in bands:
            for a in amps:
                for sd in seeds:
                    rows.append({"source": s, "band": b, "amplitude": a, "seed": sd,
                                 "auc_drop": rng.normal(0.2, 0.1), "iid_auc": rng.uniform(0.5, 1),
                                 "ood_auc": rng.uniform(0, 0.5), "val_auc": rng.uniform(0.5, 1),
                                 "epochs_to_loss": rng.uniform(1, 3), "align_before": rng.uniform(0, 1),
                                 "align_after": rng.uniform(0, 1)})
    return pd.DataFrame(rows)


def test_summary_ci_is_the_student_t_interval_over_seeds() -> None:
    t = _table(np.random.default_rng(0))
    t.loc[0, "epochs_to_loss"] = np.nan  # a unit that never latched on: left out of its cell's interval
    s = summarise(t).set_index(["source", "band", "amplitude"])
    assert len(s) == 2 * 3 * 2 and (s["n_seeds"] == 4).all()
    for key, g in t.groupby(["source", "band", "amplitude"]):
        for m in ("auc_drop", "val_auc", "epochs_to_loss"):
            v = g[m].dropna().to_numpy()
            lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
            assert s.loc[key, f"{m}_mean"] == pytest.approx(v.mean(), rel=1e-12)
            assert (s.loc[key, f"{m}_lo"], s.loc[key, f"{m}_hi"]) == pytest.approx((lo, hi), rel=1e-12)
    assert s.loc[("a", "low", 0.05), "epochs_to_loss_n"] == 3
    one = summarise(t[t["seed"] == 0])
    assert one["auc_drop_lo"].isna().all() and one["auc_drop_mean"].notna().all()  # one seed: no interval


def test_onset_is_the_first_amplitude_whose_ci_excludes_zero() -> None:
    summary = pd.DataFrame({"source": ["s"] * 3 + ["r"] * 3, "band": ["low"] * 6,
                            "amplitude": [0.15, 0.02, 0.05] * 2,
                            "auc_drop_mean": [0.5, 0.01, 0.2, 0.1, 0.0, 0.05],
                            "auc_drop_lo": [0.3, -0.05, 0.02, -0.01, -0.1, -0.2]})
    o = onset_amplitudes(summary).set_index("source")
    assert o.loc["s", "onset_amplitude"] == 0.05 and o.loc["s", "auc_drop_at_onset"] == 0.2
    assert np.isnan(o.loc["r", "onset_amplitude"])


def test_alignment_rank_correlation_is_spearman_of_the_seed_means() -> None:
    t = _table(np.random.default_rng(1))
    res = alignment_rank_correlation(t, n_boot=300, seed=0).set_index("amplitude")
    for amp, g in t.groupby("amplitude"):
        m = g.groupby(["source", "band"])[["align_before", "auc_drop"]].mean()
        rho = stats.spearmanr(m["align_before"], m["auc_drop"]).statistic
        assert res.loc[amp, "spearman"] == pytest.approx(rho, abs=1e-12)
        assert res.loc[amp, "n_pairs"] == 6 and res.loc[amp, "n_seeds"] == 4
        assert -1 <= res.loc[amp, "ci_lo"] <= res.loc[amp, "ci_hi"] <= 1 and res.loc[amp, "n_boot"] > 250
    again = alignment_rank_correlation(t, n_boot=300, seed=0)
    pd.testing.assert_frame_equal(again, res.reset_index())  # seeded


def test_alignment_bootstrap_ci_collapses_when_every_seed_ranks_alike() -> None:
    """Each seed orders the pairs the same way (drop increasing with alignment, seed-specific shifts):
    every resample of the seeds gives rho = 1, so the CI is [1, 1]; with the drop reversed, [-1, -1]."""
    t = _table(np.random.default_rng(2), amps=(0.1,))
    rank = t.groupby(["source", "band"]).ngroup().to_numpy()
    t["align_before"] = rank / 10 + 0.01 * t["seed"]
    t["auc_drop"] = rank / 20 - 0.03 * t["seed"]
    (row,) = alignment_rank_correlation(t, n_boot=200).to_dict(orient="records")
    assert (row["spearman"], row["ci_lo"], row["ci_hi"]) == pytest.approx((1.0, 1.0, 1.0))
    t["auc_drop"] = -t["auc_drop"]
    (row,) = alignment_rank_correlation(t, n_boot=200).to_dict(orient="records")
    assert (row["spearman"], row["ci_lo"], row["ci_hi"]) == pytest.approx((-1.0, -1.0, -1.0))


def test_validation_split_is_held_out_from_the_same_seeded_generator() -> None:
    from transferability.shortcut import make_splits

    kw = dict(n_train=24, n_val=16, n_test=12, size=32)
    sp = make_splits(seed=3, **kw)
    assert {k: len(v[1]) for k, v in sp.items()} == {"train": 24, "iid": 12, "ood": 12, "val": 16}
    flat = {k: v[0].reshape(len(v[0]), -1) for k, v in sp.items()}
    for other in ("train", "iid", "ood"):
        # no validation image equals (or nearly equals) an image of another split
        d = np.abs(flat["val"][:, None, :] - flat[other][None, :, :]).max(-1)
        assert d.min() > 1e-3
    for k, (_, y) in sp.items():
        assert set(np.unique(y)) == {0, 1}, k
    same = make_splits(seed=3, **kw)
    np.testing.assert_array_equal(same["val"][0], sp["val"][0])
    # adding the validation split leaves the other splits as they were (it is cut last)
    no_val = make_splits(seed=3, **{**kw, "n_val": 4})
    np.testing.assert_array_equal(no_val["ood"][0], sp["ood"][0])
    assert not np.array_equal(make_splits(seed=4, **kw)["val"][0], sp["val"][0])


def _tiny(width: int):
    def make() -> nn.Module:
        make.calls += 1
        return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, 2))
    make.calls = 0
    return make


@pytest.mark.slow
def test_units_resume_and_the_tables_follow_from_the_units(tmp_path) -> None:
    """2 sources x 2 bands x 2 seeds, one epoch each: a run that lost one unit (killed before it was
    recorded) recomputes that unit only and gives the same tables; summary and alignment are the
    t-interval and Spearman of the per-unit table."""
    from transferability.shortcut import frequency_shortcut_experiment
    from transferability.shortcut_report import shortcut_report

    facs = {"w4": _tiny(4), "w8": _tiny(8)}
    kw = dict(bands=("low", "high"), amplitudes=(0.5,), seeds=(0, 1), n_train=16, n_val=12, n_test=12, size=32,
              epochs=1, batch_size=8, lr=1e-2, n_boot=50, work_dir=tmp_path)
    res = frequency_shortcut_experiment(facs, **kw)
    assert len(res.table) == 8 and facs["w4"].calls == facs["w8"].calls == 4
    assert res.table[["val_auc", "iid_auc", "ood_auc"]].stack().between(0, 1).all()
    assert (res.table["best_epoch"] == 1).all()
    assert not list((tmp_path / "engine").rglob("*.pt"))  # a recorded unit keeps no resume weights
    (tmp_path / "units" / "w8__high__a0.5__s1.json").unlink()
    (tmp_path / "shortcut_units" / "w8__high__a0.5__s1.json").unlink()
    again = frequency_shortcut_experiment(facs, **kw)
    assert facs["w4"].calls == 4 and facs["w8"].calls == 5
    pd.testing.assert_frame_equal(again.table, res.table)
    pd.testing.assert_frame_equal(again.summary, res.summary)
    for key, g in res.table.groupby(["source", "band", "amplitude"], sort=False):
        v = g["auc_drop"].to_numpy()
        lo, hi = stats.t.interval(0.95, 1, loc=v.mean(), scale=stats.sem(v))
        row = res.summary.set_index(["source", "band", "amplitude"]).loc[key]
        assert (row["auc_drop_lo"], row["auc_drop_hi"]) == pytest.approx((lo, hi), rel=1e-9)
    m = res.table.groupby(["source", "band"])[["align_before", "auc_drop"]].mean()
    expected = stats.spearmanr(m["align_before"], m["auc_drop"]).statistic
    assert res.alignment["spearman"].iloc[0] == pytest.approx(expected, abs=1e-12, nan_ok=True)
    shortcut_report(res, tmp_path)
    for name in ("table.csv", "summary.csv", "onset.csv", "alignment.csv", "metrics.json", "report.html"):
        assert (tmp_path / name).is_file(), name
    assert "Spearman" in (tmp_path / "report.html").read_text()


def test_bad_sweep_settings_are_refused_before_any_work(tmp_path) -> None:
    from typer.testing import CliRunner

    from medbench.cli import app
    from medbench.errors import InputError
    from transferability.shortcut import frequency_shortcut_experiment

    fac = _tiny(4)
    with pytest.raises(InputError, match="amplitudes"):
        frequency_shortcut_experiment({"t": fac}, amplitudes=(0.05, 1.5), work_dir=tmp_path / "a")
    with pytest.raises(InputError, match="at least one"):
        frequency_shortcut_experiment({"t": fac}, seeds=(), work_dir=tmp_path / "a")
    assert fac.calls == 0 and not (tmp_path / "a").exists()
    from medbench.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="imagenett"):
        frequency_shortcut_experiment(["imagenett"], work_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    with pytest.raises(InputError, match="--seed integers"):
        CliRunner().invoke(app, ["transfer-shortcut", "--sources", "random:resnet18", "--seeds", "0,one",
                                 "--out", str(tmp_path / "b")], catch_exceptions=False)


def test_a_source_at_chance_everywhere_is_flagged_as_unlearned() -> None:
    from transferability.shortcut_stats import unlearned_sources

    summary = pd.DataFrame({"source": ["pre", "pre", "rand", "rand", "one"],
                            "iid_auc_lo": [0.45, 0.8, 0.3, 0.5, np.nan]})
    assert unlearned_sources(summary) == ["rand"]

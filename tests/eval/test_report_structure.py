"""Structure of the HTML reports, built directly from small tables (no workflow is run).

Checks: headings, figures embedded as <img>, the warning box when a result is doubtful (and only
then), the configuration as YAML, wide tables in a scrolling wrapper, and p-values that never read 0.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import yaml

from medbench.eval import figures
from medbench.eval.doubts import MAX_CI_WIDTH, MIN_PER_CLASS, auc_doubts
from medbench.eval.evaluate import write_evaluation
from medbench.eval.metrics import reliability_curve
from medbench.eval.report import HtmlReport

P_ZERO = re.compile(r"p\s*=\s*0(\.0+)?(?![.\d])|<td>0\.0000</td>")


def _pred(n: int, shift: float, *, seed: int, sources: tuple[str, ...] = ("model",)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = np.repeat([0, 1], n // 2)
    parts = []
    for k, src in enumerate(sources):
        z = rng.normal(size=n) + (shift if k == 0 else 0.0) * label
        parts.append(pd.DataFrame({"uid": [f"u{i}" for i in range(n)], "split": "test", "label": label,
                                   "source": src, "prob": 1 / (1 + np.exp(-z))}))
    return pd.concat(parts, ignore_index=True)


def _headings(html: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", html)


def test_chance_model_report_has_warning_curves_examples_and_yaml(tmp_path) -> None:
    pred = _pred(40, 0.0, seed=1)  # no signal, 20 per class: at chance and too small
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.7, 0.69, 0.68], "val_loss": [0.7, 0.71, 0.7],
                            "val_auc": [0.5, 0.48, 0.52]})
    examples = [(np.full((8, 8), v, np.float32), f"label {v > .5:d}, prob {v:.2f}") for v in (0.2, 0.8)]
    cfg = {"train": {"epochs": 3, "lr": 1e-3}, "data": {"size": 64, "aug": ("flip", 0.5)}}
    path = write_evaluation(pred, tmp_path, n_boot=200, history=history, config=cfg, examples=examples)
    html = path.read_text()
    assert _headings(html) == ["Summary", "ROC curves", "Calibration", "Training curves", "Example test images"]
    assert html.count("<img") == 4  # ROC, reliability, training curves, examples
    box = re.search(r"<div class='warnbox'[^>]*>(.*?)</div>", html, re.S)
    assert box is not None and "at chance" in box.group(1)
    # the YAML in the <details> block reads back as the configuration (tuples become lists)
    block = re.search(r"<details><summary>Configuration \(YAML\)</summary><pre>(.*?)</pre></details>", html, re.S)
    assert block is not None
    import html as html_mod

    assert yaml.safe_load(html_mod.unescape(block.group(1))) == {"train": {"epochs": 3, "lr": 1e-3},
                                                                 "data": {"size": 64, "aug": ["flip", 0.5]}}
    assert "<div class='scroll'><table" in html
    assert not P_ZERO.search(html)


def test_clear_model_on_large_test_set_has_no_warning_and_p_never_zero(tmp_path) -> None:
    pred = _pred(400, 3.0, seed=2, sources=("good", "random"))
    html = write_evaluation(pred, tmp_path, n_boot=200).read_text()
    # one warning box only: for the no-signal source, never for the good one
    boxes = re.findall(r"<div class='warnbox'[^>]*>(.*?)</div>", html, re.S)
    assert len(boxes) == 1 and "random" in boxes[0] and "good" not in boxes[0]
    assert "Paired comparison" in _headings(html)
    # no resample crosses zero with this gap, so p sits at its floor 2/(B+1) and is printed as "< 0.0100"
    assert "&lt; 0.0100" in html and not P_ZERO.search(html)


@pytest.mark.parametrize(("auc", "lo", "hi", "n_pos", "n_neg", "expect"), [
    (0.52, 0.45, 0.59, 100, 100, ["chance"]),                    # CI includes 0.5
    (0.30, 0.22, 0.38, 100, 100, ["below chance"]),              # CI entirely below 0.5
    (0.80, 0.66, 0.92, 100, 100, ["wide"]),                      # 0.26 > MAX_CI_WIDTH
    (0.90, 0.85, 0.95, MIN_PER_CLASS - 1, 100, ["positive"]),    # too few positives
    (0.90, 0.85, 0.95, MIN_PER_CLASS, MIN_PER_CLASS, []),        # at the thresholds: fine
])
def test_auc_doubts_thresholds(auc, lo, hi, n_pos, n_neg, expect) -> None:
    got = auc_doubts("m", auc, lo, hi, n_pos=n_pos, n_neg=n_neg)
    assert len(got) == len(expect) and all(e in g for e, g in zip(expect, got))
    assert MAX_CI_WIDTH == 0.2


def test_reference_classifier_wording() -> None:
    (msg,) = auc_doubts("reference classifier", 0.5, 0.45, 0.55, role="reference")
    assert "did not learn" in msg


def test_warning_box_escapes_and_is_skipped_when_empty() -> None:
    rep = HtmlReport("t").warning([]).warning("a <b> & c", title="Careful")
    html = rep.render()
    assert html.count("class='warnbox'") == 1 and "a &lt;b&gt; &amp; c" in html and "<strong>Careful</strong>" in html


def test_reliability_figure_shows_bin_counts() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(size=500)
    y = (rng.uniform(size=500) < p).astype(int)
    fig = figures.reliability_figure({"m": reliability_curve(y, p)})
    ax, axn = fig.axes
    heights = [b.get_height() for b in axn.patches]
    expected, _ = np.histogram(p, bins=10, range=(0, 1))  # continuous p: no value on a bin edge
    assert heights == expected.tolist()
    labels = [t.get_text() for t in ax.texts]
    assert labels == [f"n={c}" for c in expected if c > 0]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_training_curves_plot_the_history() -> None:
    h = pd.DataFrame({"epoch": [1, 2, 3, 4], "train_loss": [1.0, 0.8, 0.6, 0.5], "val_loss": [1.1, 0.9, 0.8, 0.85],
                      "val_auc": [0.6, 0.7, 0.75, 0.74]})
    fig = figures.training_curves_figure(h)
    loss_ax, auc_ax = fig.axes[:2]
    lines = {ln.get_label(): ln for ln in loss_ax.get_lines()}
    assert list(lines["train loss"].get_xdata()) == [1, 2, 3, 4]  # history.csv is 1-based, as the progress bar
    assert list(lines["val loss"].get_ydata()) == [1.1, 0.9, 0.8, 0.85]
    assert list(auc_ax.get_lines()[0].get_ydata()) == [0.6, 0.7, 0.75, 0.74]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_transfer_report_shows_raw_scores_ranks_and_explanations(tmp_path) -> None:
    from transferability.pipeline import _report
    from transferability.report_text import METRIC_NOTES

    scores = pd.DataFrame({"target": "t", "source": ["a", "b", "a", "b"], "metric": ["logme", "logme", "lp", "lp"],
                           "score": [-0.61, -0.58, 0.91, 0.93], "auc": [0.70, 0.80, 0.70, 0.80]})
    wide = scores.pivot(index="source", columns="metric", values="score").reset_index()
    wide.insert(1, "auc", [0.70, 0.80])
    path = _report(tmp_path, scores, wide, "t", True, HtmlReport, ["b: something odd"], config={"seed": 0})
    html = path.read_text()
    heads = _headings(html)
    assert heads[:2] == ["Scores", "Rank correlation with fine-tuned AUC"]
    assert "Ranks" in heads and "What the metrics measure" in heads
    assert html.count("<img") == 1 and html.count("class='warnbox'") == 1 and "<details>" in html
    for m in ("auc", "logme", "lp"):
        assert f"<li>{m}: {METRIC_NOTES[m]}</li>" in html
    # raw scores, not min-max scaled: -0.61 is shown as itself
    assert "-0.6100" in html
    # ranks: b beats a on every column (higher is better), so b is 1 and a is 2 everywhere
    table = re.search(r"<h2>Ranks</h2>.*?<tbody>(.*?)</tbody>", html, re.S).group(1)
    rows = [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    assert rows == [["a", "2", "2", "2"], ["b", "1", "1", "1"]]

"""Properties every registered metric must have: monotone in class separation, deterministic,
invariant to sample order and class numbering, inputs untouched, bad input rejected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medbench.errors import InputError
from tests.transferability.conftest import gaussian_mixture
from transferability.features import METRICS, compute_metric, compute_metrics, list_metrics

ALL = list_metrics()
TORCH = [n for n in ALL if METRICS.get(n).torch]


def test_registry_lists_every_metric() -> None:
    expected = {"logme", "leep", "nleep", "sfda", "parc", "ncti", "lp", "hscore", "reg_hscore",
                "nce", "transrate", "gbc", "knn"}
    assert expected <= set(ALL)
    assert {"logme", "hscore", "reg_hscore", "sfda", "transrate", "gbc", "parc"} <= set(TORCH)


@pytest.mark.parametrize("name", ALL)
def test_score_rises_with_class_separation(name: str) -> None:
    scores = []
    for sep in (0.3, 1.5, 6.0):
        x, y, logits = gaussian_mixture(sep)
        scores.append(compute_metric(name, x, y, logits=logits))
    assert scores[0] < scores[1] < scores[2], scores


@pytest.mark.parametrize("name", ALL)
def test_deterministic_invariant_and_pure(name: str, mixture) -> None:
    x, y, logits = mixture
    x0, y0, l0 = x.copy(), y.copy(), logits.copy()
    a = compute_metric(name, x, y, logits=logits)
    b = compute_metric(name, x, y, logits=logits)
    assert a == b  # bitwise identical across runs
    np.testing.assert_array_equal(x, x0)  # never mutated
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(logits, l0)
    perm = np.random.default_rng(7).permutation(len(y))
    assert compute_metric(name, x[perm], y[perm], logits=logits[perm]) == pytest.approx(a, rel=1e-9, abs=1e-12)
    relabel = np.array([2, 0, 1])
    # the authors' PARC breaks label ties with float rounding that depends on the class numbering
    kw = {"exact_label_ties": True} if name == "parc" else {}
    a = compute_metric(name, x, y, logits=logits, **kw)
    assert compute_metric(name, x, relabel[y], logits=logits, **kw) == pytest.approx(a, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_tensor_input_equals_numpy_and_is_not_mutated(name: str, mixture) -> None:
    x, y, logits = mixture
    xt, yt, lt = torch.tensor(x, dtype=torch.float32), torch.tensor(y), torch.tensor(logits)
    xt0 = xt.clone()
    a = compute_metric(name, xt, yt, logits=lt)
    b = compute_metric(name, xt.double().numpy(), y, logits=logits)
    assert a == pytest.approx(b, rel=1e-12, abs=1e-12)
    assert torch.equal(xt, xt0)


@pytest.mark.parametrize("name", TORCH)
def test_torch_backend_matches_numpy(name: str, mixture) -> None:
    x, y, _ = mixture
    a = compute_metric(name, x, y, backend="numpy")
    b = compute_metric(name, x, y, backend="torch", device="cpu")
    assert b == pytest.approx(a, rel=1e-8, abs=1e-10)


@pytest.mark.parametrize("name", TORCH)
def test_torch_backend_wide_features(name: str) -> None:
    x, y, _ = gaussian_mixture(2.0, n=30, d=50)  # N < D takes the other branch of the algebra
    a = compute_metric(name, x, y, backend="numpy")
    b = compute_metric(name, x, y, backend="torch")
    assert b == pytest.approx(a, rel=1e-7, abs=1e-9)


BAD = {
    "nan": lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y),
    "1d_features": lambda x, y: (x[:, 0], y),
    "label_out_of_range": lambda x, y: (x, np.where(np.arange(len(y)) == 0, -1, y)),
    "missing_class": lambda x, y: (x, np.where(y == 1, 2, y)),
    "single_class": lambda x, y: (x, np.zeros_like(y)),
    "length_mismatch": lambda x, y: (x, y[:-1]),
    "n_less_than_c": lambda x, y: (x[:3], np.array([0, 1, 3])),
    "float_labels": lambda x, y: (x, y + 0.5),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("name", ALL)
def test_bad_input_raises_input_error(name: str, case: str, mixture) -> None:
    x, y, logits = mixture
    bx, by = BAD[case](x, y)
    bl = logits[: len(bx)] if np.ndim(bx) == 2 else logits
    with pytest.raises(InputError) as err:
        compute_metric(name, bx, by, logits=bl)
    assert "labels" in str(err.value) or "features" in str(err.value)


@pytest.mark.parametrize("name", [n for n in ALL if METRICS.get(n).needs_logits])
def test_logit_metrics_require_logits(name: str, mixture) -> None:
    x, y, logits = mixture
    with pytest.raises(InputError, match="logits"):
        compute_metric(name, x, y)
    with pytest.raises(InputError, match="logits"):
        compute_metric(name, x, y, logits=logits[:-1])


def test_compute_metrics_skips_logit_metrics_without_logits(mixture) -> None:
    x, y, logits = mixture
    out = compute_metrics(x, y)  # every metric but those that need logits
    assert set(out) == set(ALL) - {"leep", "nce"}
    assert out["logme"] == compute_metric("logme", x, y)
    assert compute_metrics(x, y, metrics=["leep"], logits=logits) == {"leep": compute_metric("leep", x, y, logits=logits)}
    with pytest.raises(InputError, match="leep"):
        compute_metrics(x, y, metrics=["leep"])


def test_unknown_metric_suggests_names(mixture) -> None:
    x, y, _ = mixture
    with pytest.raises(KeyError, match="logme"):
        compute_metric("logmee", x, y)

"""Each metric against an independent computation of its formula (written here, not imported)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg, stats

from tests.transferability.conftest import gaussian_mixture
from transferability.features import (
    gbc,
    hscore,
    knn,
    leep,
    logme,
    logme_details,
    logme_evidence,
    lp,
    nce,
    ncti,
    ncti_combine,
    ncti_components,
    nleep,
    parc,
    reg_hscore,
    sfda,
    transrate,
)


def _log_marginal(f: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """log N(t | 0, I/beta + F F^T / alpha): the Bayesian linear regression evidence."""
    cov = np.eye(len(t)) / beta + f @ f.T / alpha
    return float(stats.multivariate_normal(mean=np.zeros(len(t)), cov=cov).logpdf(t))


@pytest.mark.parametrize("shape", [(14, 4), (6, 9)])  # N > D and N < D
def test_logme_is_the_closed_form_evidence_at_its_fixed_point(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    f = rng.standard_normal(shape)
    t = f @ rng.standard_normal(shape[1]) * 0.7 + 0.5 * rng.standard_normal(shape[0])
    ev, a, b = logme_evidence(f, t)
    assert ev == pytest.approx(_log_marginal(f, t, a, b) / shape[0], rel=1e-10, abs=1e-12)
    # run the iteration to convergence: the fixed point is a stationary point of the evidence
    ev, a, b = logme_evidence(f, t, max_iter=10_000, tol=1e-13)
    h = 1e-5
    for da, db in ((h, 0.0), (0.0, h)):
        up = _log_marginal(f, t, a * np.exp(da), b * np.exp(db))
        down = _log_marginal(f, t, a * np.exp(-da), b * np.exp(-db))
        # d evidence / d log(alpha|beta) = 0, up to the 1e-5 guard in the updates, which matters
        # only when the fit is nearly exact (N < D)
        assert abs(up - down) / (2 * h) < (1e-4 if shape[0] > shape[1] else 1e-2)
    # and a maximum along each axis
    assert _log_marginal(f, t, a, b) >= max(_log_marginal(f, t, a * 1.5, b), _log_marginal(f, t, a, b / 1.5))


def test_logme_classification_is_the_mean_one_vs_all_evidence(mixture) -> None:
    x, y, _ = mixture
    per_class = [logme_evidence(x, (y == k).astype(float))[0] for k in range(3)]
    assert logme(x, y) == pytest.approx(np.mean(per_class), rel=1e-12)
    d = logme_details(x, y)
    assert d["steps"].max() <= 11 and d["steps"].min() >= 1
    for k in range(3):
        t = (y == k).astype(float)
        assert d["evidence"][k] == pytest.approx(_log_marginal(x, t, d["alpha"][k], d["beta"][k]) / len(y), rel=1e-9)


def _logme_thuml(f: np.ndarray, y: np.ndarray) -> float:
    """The authors' fixed-point LogME (previous-step posterior mean in the evidence, N > D)."""
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2
    out = []
    for k in range(int(y.max()) + 1):
        t = (y == k).astype(float)
        x = u.T @ t
        x2 = x**2
        res_x2 = t @ t - x2.sum()
        alpha = beta = 1.0
        for _ in range(11):
            lam = alpha / beta
            gamma = (sigma / (sigma + lam)).sum()
            m2 = (sigma * x2 / (lam + sigma) ** 2).sum()
            res2 = (x2 / (1 + sigma / lam) ** 2).sum() + res_x2
            alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - lam) / lam <= 1e-3:
                break
        ev = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.log(alpha + beta * sigma).sum()
              - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
        out.append(ev / n)
    return float(np.mean(out))


def test_logme_matches_the_authors_iteration(mixture) -> None:
    x, y, _ = mixture
    assert logme(x, y) == pytest.approx(_logme_thuml(x, y), abs=1e-6)


def test_hscore_equals_matrix_formula(mixture) -> None:
    x, y, _ = mixture
    g = np.stack([x[y == k].mean(0) for k in range(3)])[y]
    expected = np.trace(np.linalg.inv(np.cov(x, rowvar=False)) @ np.cov(g, rowvar=False))
    assert hscore(x, y) == pytest.approx(expected, rel=1e-9)


def test_reg_hscore_uses_ledoit_wolf(mixture) -> None:
    from sklearn.covariance import LedoitWolf

    from transferability._backend import get_backend
    from transferability.metrics._linalg import ledoit_wolf

    x, y, _ = mixture
    x = x[:40]  # few samples: shrinkage strictly between 0 and 1
    y = y[:40]
    lw = LedoitWolf().fit(x)
    cov, a = ledoit_wolf(get_backend("numpy"), x)
    assert 0 < a < 1 and a == pytest.approx(lw.shrinkage_, rel=1e-10)
    np.testing.assert_allclose(cov, lw.covariance_, rtol=1e-10, atol=1e-12)
    g = np.stack([x[y == k].mean(0) for k in range(3)])[y]
    expected = np.trace(np.linalg.pinv(lw.covariance_) @ ((1 - lw.shrinkage_) * np.cov(g, rowvar=False)))
    assert reg_hscore(x, y) == pytest.approx(expected, rel=1e-9)


def test_leep_and_nce_against_loops(mixture) -> None:
    x, y, logits = mixture
    n, z = logits.shape
    theta = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    joint = np.zeros((3, z))
    for i in range(n):
        joint[y[i]] += theta[i] / n
    cond = joint / joint.sum(0)
    expected = np.mean([np.log(sum(cond[y[i], j] * theta[i, j] for j in range(z))) for i in range(n)])
    assert leep(x, y, logits=logits) == pytest.approx(expected, rel=1e-10)
    zhat = logits.argmax(1)
    h = 0.0  # H(Y | Z) from counts
    for j in np.unique(zhat):
        pz = np.mean(zhat == j)
        for k in range(3):
            pyz = np.mean((zhat == j) & (y == k))
            if pyz > 0:
                h -= pyz * np.log(pyz / pz)
    assert nce(x, y, logits=logits) == pytest.approx(-h, rel=1e-10)


def test_leep_perfect_source_scores_zero() -> None:
    y = np.arange(30) % 3
    logits = 50.0 * np.eye(3)[y]  # the source head already predicts the target labels
    assert leep(np.zeros((30, 2)) + np.arange(30)[:, None], y, logits=logits) == pytest.approx(0.0, abs=1e-12)
    assert nce(np.ones((30, 2)), y, logits=logits) == pytest.approx(0.0, abs=1e-12)


def _sfda_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Shao et al.'s SFDA with the generalised eigenproblem, on a copy of x."""
    x = x.copy()
    n, c = len(y), int(y.max()) + 1

    def fda(x, shrink):
        priors = np.bincount(y) / n
        means = np.stack([x[y == k].mean(0) for k in range(c)])
        sw = sum(priors[k] * np.cov(x[y == k].T, bias=True) for k in range(c))
        if shrink is None:
            v = sw.sum(1)
            for _ in range(3):
                w = sw @ v
                u = w / np.linalg.norm(w)
                w = sw @ u
                v = w / np.linalg.norm(w)
            shrink = max(np.exp(-5 * (v @ sw @ u)), 1e-10)
        dd = x.shape[1]

        def shrunk(cv):
            return (1 - shrink) * cv + shrink * np.trace(cv) / dd * np.eye(dd)

        st, sws = shrunk(np.cov(x.T, bias=True)), shrunk(sw)
        evals, evecs = linalg.eigh(st - sws, sws)
        evecs = evecs[:, np.argsort(evals)[::-1]]
        coef = means @ evecs @ evecs.T
        icpt = -0.5 * np.diag(means @ coef.T) + np.log(priors)
        s = x @ coef.T + icpt
        p = np.exp(s - s.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True), shrink

    prob, shrink = fda(x, None)
    prob = np.exp(prob) / np.exp(prob).sum(1, keepdims=True)
    means = np.stack([x[y == k].mean(0) for k in range(c)])
    for k in range(c):
        idx = np.where(y == k)[0]
        p = prob[idx, k][:, None]
        x[idx] = p * x[idx] + (1 - p) * (means.sum(0) - means[k]) / (c - 1)
    prob, _ = fda(x, shrink)
    return float(prob[np.arange(n), y].mean())


@pytest.mark.parametrize("sep", [0.5, 2.0])
def test_sfda_matches_reference(sep: float) -> None:
    x, y, _ = gaussian_mixture(sep)
    assert sfda(x, y) == pytest.approx(_sfda_reference(x, y), abs=1e-6)


def _network_like_features(n: int = 300, d: int = 512, c: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ReLU of a random 64-dim latent (class shifted) mixed into d dims, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    z = rng.standard_normal((n, 64))
    z[np.arange(n), y] += 2.0
    return np.maximum(z @ rng.standard_normal((64, d)) + 0.5 * rng.standard_normal((n, d)), 0), y


def _parc_reference(x: np.ndarray, y: np.ndarray, *, randomized: bool, float_labels: bool) -> float:
    """The published PARC recipe (Bolya et al.; DovileDo's PARC_Score) written out."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    k = min(32, len(y) - 1)
    pca = (PCA(n_components=k, svd_solver="randomized", random_state=1919, iterated_power=1) if randomized
           else PCA(n_components=k, svd_solver="full"))
    f = StandardScaler().fit_transform(pca.fit_transform(x))
    rdm_f = 1 - np.corrcoef(f)
    onehot = np.eye(len(np.unique(y)))[y]
    rdm_y = 1 - np.corrcoef(onehot)  # N x N, in floating point, as the authors
    if not float_labels:
        rdm_y = np.round(rdm_y, 12)  # the exact tie groups
    iu = np.triu_indices(len(y), 1)
    return 100 * stats.spearmanr(rdm_f[iu], rdm_y[iu])[0]


def test_parc_matches_the_authors_recipe_and_the_exact_option() -> None:
    x, y = _network_like_features()
    authors = _parc_reference(x, y, randomized=True, float_labels=True)
    assert parc(x, y) == pytest.approx(authors, rel=0.01)
    assert parc(x, y) == pytest.approx(authors, abs=1e-8)  # in fact bit for bit
    assert parc(x, y, exact_label_ties=True) == pytest.approx(
        _parc_reference(x, y, randomized=True, float_labels=False), abs=1e-8)
    exact = _parc_reference(x, y, randomized=False, float_labels=False)
    assert parc(x, y, pca_solver="exact", exact_label_ties=True) == pytest.approx(exact, abs=1e-6)
    assert abs(exact - authors) > 0.01 * abs(authors)  # the PCA solver matters on this data
    # the torch backend follows the same recipe
    assert parc(x, y, backend="torch") == pytest.approx(parc(x, y), abs=1e-6)


def test_transrate_matches_reference(mixture) -> None:
    x, y, _ = mixture
    eps = 1e-4

    def rate(z):
        return 0.5 * np.linalg.slogdet(np.eye(z.shape[1]) + z.T @ z / (len(z) * eps))[1]

    z = x - x.mean(0)
    expected = rate(z) - sum(rate(z[y == k]) for k in range(3)) / 3
    assert transrate(x, y) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("kind", ["spherical", "diagonal"])
def test_gbc_is_the_bhattacharyya_coefficient_sum(kind: str) -> None:
    x, y, _ = gaussian_mixture(1.0, d=10)
    total = 0.0
    stats_ = []
    for k in range(3):
        v = np.maximum(x[y == k].var(0), 1e-4)
        cov = np.diag(np.full(10, v.mean()) if kind == "spherical" else v)
        stats_.append((x[y == k].mean(0), cov))
    for i in range(3):
        for j in range(3):
            if i != j:
                (m1, c1), (m2, c2) = stats_[i], stats_[j]
                cm = (c1 + c2) / 2
                db = (m1 - m2) @ np.linalg.solve(cm, m1 - m2) / 8 + 0.5 * (
                    np.linalg.slogdet(cm)[1] - 0.5 * np.linalg.slogdet(c1)[1] - 0.5 * np.linalg.slogdet(c2)[1])
                total += np.exp(-db)
    assert gbc(x, y, gaussian_type=kind, pca_dims=None) == pytest.approx(-total, rel=1e-10)
    # with PCA kept at full rank the score is unchanged (rotation invariance of the distance)
    if kind == "spherical":
        assert gbc(x, y, pca_dims=10) == pytest.approx(-total, rel=1e-8)


def test_ncti_components_and_combination(mixture) -> None:
    x, y, _ = mixture
    seli, ncc, vc = ncti_components(x, y)
    assert 1 / 3 < ncc <= 1 and seli > 0
    assert ncti(x, y) == pytest.approx(seli + ncc + vc)
    terms = {"a": (1.0, 0.5, 2.0), "b": (3.0, 0.9, 1.0), "c": (2.0, 0.7, 1.5), "d": (2.5, 0.8, 1.2)}
    # per-term min-max across the sources, then summed with vc ADDED (DovileDo's code)
    cols = list(zip(*terms.values()))
    scaled = {k: [(v[i] - min(cols[i])) / (max(cols[i]) - min(cols[i])) for i in range(3)]
              for k, v in terms.items()}
    assert ncti_combine(terms) == pytest.approx({k: sum(v) for k, v in scaled.items()})
    assert ncti_combine(terms, vc_sign=-1) == pytest.approx({k: v[0] + v[1] - v[2] for k, v in scaled.items()})
    # the raw sum ranks by seli alone; the combination does not have to
    assert ncti_combine(terms)["a"] == pytest.approx(0 + 0 + 1)


def test_knn_matches_brute_force_cross_validation(mixture) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    from transferability.metrics.knn import stratified_folds

    x, y, _ = mixture
    fold = stratified_folds(x, y, 3, 5)
    assert np.all(np.bincount(fold) == 24)  # 40 per class dealt over 5 folds
    assert all(np.all(np.bincount(y[fold == f]) == 8) for f in range(5))  # stratified
    correct = 0
    for f in range(5):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        clf = KNeighborsClassifier(5).fit(x[tr], y[tr])
        for i, p_sk in zip(te, clf.predict(x[te])):
            dist = np.linalg.norm(x[tr] - x[i], axis=1)
            nn = y[tr][np.argsort(dist, kind="stable")[:5]]
            votes = np.bincount(nn, minlength=3)
            tied = np.flatnonzero(votes == votes.max())
            pred = next(c for c in nn if c in tied)  # tie -> class of the nearest tied neighbour
            if len(tied) == 1:
                assert pred == p_sk  # no tie: the usual majority vote
            correct += pred == y[i]
    assert knn(x, y) == pytest.approx(correct / len(y), abs=1e-15)


def test_lp_is_one_for_separated_classes_and_lower_for_random_labels() -> None:
    x, y, _ = gaussian_mixture(12.0, n=60)
    assert lp(x, y, n_components=3) == 1.0
    shuffled = np.random.default_rng(0).permutation(y)
    assert lp(x, shuffled, n_components=3) < 0.9


def test_nleep_is_a_probability_and_seeded(mixture) -> None:
    x, y, _ = mixture
    a = nleep(x, y)
    assert 1 / 3 < a < 1
    assert nleep(x, y, seed=0) == a


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("shape, k", [((200, 30), 5), ((200, 30), 0.8), ((20, 50), 5), ((20, 50), 0.8)])
def test_pca_matches_sklearn_including_signs(shape: tuple[int, int], k: float, backend: str) -> None:
    from sklearn.decomposition import PCA

    from transferability._backend import get_backend
    from transferability.metrics._linalg import pca

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) @ rng.standard_normal((shape[1], shape[1]))
    ref = PCA(n_components=k, svd_solver="full").fit(x)
    xp = get_backend(backend)
    scores, var = pca(xp, xp.asarray(x), k)
    np.testing.assert_allclose(xp.to_numpy(scores), ref.transform(x), atol=1e-9)
    np.testing.assert_allclose(var[: ref.n_components_], ref.explained_variance_, rtol=1e-9)

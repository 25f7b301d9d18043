"""One-line explanations of the transferability metrics, shown in the transfer report."""

from __future__ import annotations

METRIC_NOTES: dict[str, str] = {
    "auc": "fine-tuned test AUC of the source on the target (the ground truth the metrics try to predict).",
    "lp": ("feature quality: k-NN (k=5) on NCA-projected features, mean probability of the true class (0-1); "
           "NCA stops after 50 iterations, so rounding alone moves LP by ~0.003-0.01: smaller gaps are noise."),
    "fu": "feature-reuse score from input-gradient spectra (Juodelyte et al.); higher = features reused more.",
    "lp_x_fu": "min-max(LP) x min-max(FU) across the candidate sources; relative, so 0 or 1 with two sources.",
    "knn": "cross-validated k-NN accuracy (k=5, 5 stratified folds) on the raw features.",
    "logme": "LogME: log marginal evidence of a Bayesian linear model on the features, per sample.",
    "leep": "LEEP: log expected empirical prediction via the source head's label distribution (needs logits).",
    "nce": "NCE: negative conditional entropy of target labels given the source head's labels (needs logits).",
    "nleep": "N-LEEP: LEEP with a Gaussian mixture on PCA-reduced features in place of the source head.",
    "hscore": "H-score: inter-class feature variance relative to total feature covariance.",
    "reg_hscore": "regularised H-score: H-score with a shrinkage covariance estimate (stable when D >= N).",
    "parc": "PARC: correlation between feature and label pairwise-distance matrices.",
    "gbc": "GBC: Gaussian Bhattacharyya coefficient between classes; closer to 0 = better separated.",
    "transrate": "TransRate: coding-rate mutual information between features and labels.",
    "sfda": "SFDA: self-challenging Fisher discriminant analysis, mean true-class probability.",
    "ncti": "NCTI: neural-collapse index (class separation, nearest-centre fit, within-class variance), "
            "min-max combined across the sources; relative, so 0 or 1 with two sources.",
}


def metric_note(name: str) -> str:
    """``"name: explanation"``; higher is better for every metric medbench reports."""
    return f"{name}: {METRIC_NOTES.get(name, 'see transferability.metrics for its definition.')}"

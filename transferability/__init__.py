"""Transferability: feature metrics, the feature+gradient metric, spectral analysis, ranking.

- :mod:`transferability.features`: metric registry and functions (LogME, LEEP, N-LEEP, NCE, SFDA,
  PARC, NCTI, LP, kNN, H-score, regularised H-score, TransRate, GBC), one module each under
  :mod:`transferability.metrics`.
- :mod:`transferability.gradient`: FU (gradient-norm ratio) and min-max(LP) x min-max(FU).
- :mod:`transferability.spectral` / :mod:`transferability.shortcut`: gradient and artifact
  spectra, spectral alignment, the frequency-shortcut experiment.
- :mod:`transferability.ranking`: weighted Kendall tau per target, Friedman and Nemenyi tests.
- :mod:`transferability.pipeline` / :mod:`transferability.cli`: ``medbench transfer``.
"""

"""Transferability: feature metrics, the feature+gradient metric, spectral analysis, ranking."""

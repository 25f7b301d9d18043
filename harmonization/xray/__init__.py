"""Cross-vendor X-ray harmonization: GDCE curves and predictor, classical baselines."""

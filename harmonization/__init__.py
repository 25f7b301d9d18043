"""Harmonization: cross-vendor X-ray harmonization (GDCE) and low-dose CT simulation/denoising."""

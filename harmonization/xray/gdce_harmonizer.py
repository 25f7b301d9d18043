"""GDCE as a ``HARMONIZERS`` entry: learned per-image curves, one predictor per source vendor.

Unlike the classical baselines, GDCE is not fitted from reference images alone: it ``needs`` a
frozen reference-vendor classifier and labelled source-vendor images, which ``medbench harmonize
fit`` (:func:`harmonization.xray.fit_job.fit_harmonizer`) provides before building the entry from
the fitted predictors (``create_harmonizer("gdce", predictors={...})``). Reference images
(``vendor=None``) pass unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from harmonization.xray.baselines import HARMONIZERS, Harmonizer
from harmonization.xray.predictor import CurvePredictor
from medbench.errors import InputError

Images = np.ndarray  # (N, H, W) float32 in [0, 1]


def gdce_transform(predictor: CurvePredictor, batch: int = 32) -> Callable[[Images], Images]:
    """Wrap a trained predictor as ``images -> harmonised images`` on numpy arrays."""

    @torch.no_grad()
    def run(images: Images) -> Images:
        x = torch.as_tensor(np.asarray(images, np.float32))[:, None]
        return torch.cat([predictor.harmonize(x[i : i + batch]) for i in range(0, len(x), batch)])[:, 0].numpy()

    return run


@HARMONIZERS.register("gdce")
class GDCEHarmonizer(Harmonizer):
    """GDCE with a curve predictor per source vendor and/or one for any vendor (``"*"``).

    Args:
        predictors: ``{vendor or "*": CurvePredictor}`` fitted by ``harmonize fit`` (or read with
            :func:`harmonization.xray.gdce.load_predictors`).
        reference: The reference vendor (its images pass unchanged in ``harmonize apply``).
    """

    name = "gdce"
    label = "GDCE"
    maps_to_reference = True
    per_vendor = True
    needs: ClassVar[frozenset[str]] = frozenset({"reference_classifier", "labelled_source_images"})

    def __init__(self, predictors: Mapping[str, CurvePredictor] | None = None, reference: str = "") -> None:
        self.predictors = dict(predictors or {})
        self.reference = reference

    @classmethod
    def from_state(cls, state: dict[str, Any], path: Path) -> GDCEHarmonizer:
        """The predictors and reference vendor of a ``model.pt`` written by ``harmonize fit``."""
        from harmonization.xray.gdce import predictors_from_state

        predictors, reference = predictors_from_state(state, path)
        return cls(predictors, reference=reference)

    def check_vendor(self, vendor: str, where: str) -> None:
        """Refuse images of a vendor with neither its own curve nor the any-vendor one (``"*"``)."""
        if not (self.predictors.get(vendor) or self.predictors.get("*")):
            raise InputError(f"{where}: no GDCE curve for Manufacturer {vendor!r}; the model was fitted "
                             f"for {sorted(self.predictors)} only (reference {self.reference!r}): refit "
                             "without --per-vendor for a model that applies to any radiograph")

    def fit(self, reference: np.ndarray, **inputs: Any) -> GDCEHarmonizer:
        """Nothing to fit from reference images: the predictors come from ``harmonize fit``."""
        if not self.predictors:
            raise InputError("gdce needs curve predictors fitted by `medbench harmonize fit` (it trains them "
                             "against a reference classifier on labelled source-vendor images); pass predictors=")
        return self

    def transform(self, images: np.ndarray, vendor: str | None = None) -> np.ndarray:
        x = np.asarray(images, np.float32)
        single = x.ndim == 2
        x = x[None] if single else x
        model = None if vendor is None else (self.predictors.get(vendor) or self.predictors.get("*"))
        out = gdce_transform(model)(x) if model is not None else x
        return out[0] if single else out

    def __call__(self, images: np.ndarray, vendor: str | None = None) -> np.ndarray:
        return self.transform(images, vendor=vendor)

"""Shared fixtures: held-out simulated phantoms (the bundled models never saw split "test")."""

from __future__ import annotations

import pytest

from harmonization.ct.evaluation import Case, make_cases


@pytest.fixture(scope="session")
def small_case() -> Case:
    """A held-out 64-px volume of 3 slices at N0 = 2.5e4 (the bundled models' setting).

    The first test volume with at least two flat ROIs (crowded phantoms can have fewer).
    """
    cases = make_cases(4, 3, size=64, n0=2.5e4, seed=0, split="test")
    return next(c for c in cases if len(c.info.flat_rois) >= 2)

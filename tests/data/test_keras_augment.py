"""Keras-style affine augmentation: identity at zero ranges, Keras' shift and edge-fill semantics."""

from __future__ import annotations

import pytest
import torch

from medbench.data.keras_augment import KerasAffine, create_augmentation
from medbench.errors import InputError


def test_zero_ranges_are_the_identity() -> None:
    x = torch.rand(1, 20, 24, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(KerasAffine(rotation=0, shift=0, shear=0, zoom=0)(x), x, atol=1e-6)


def test_shift_moves_content_by_at_most_the_range_and_fills_from_the_edge() -> None:
    w = 40
    x = torch.zeros(1, 8, w)
    x[..., 20] = 1.0  # one bright column
    x[..., 0] = 0.5  # left edge value, replicated by Keras' fill_mode="nearest"
    aug = KerasAffine(rotation=0, shift=0.1, shear=0, zoom=0, seed=0)  # its own generator draws in sequence
    moves = []
    for _ in range(200):
        out = aug(x)[0, 4]
        mid = out[8:33]  # away from the edge column, which moves by at most 4 pixels
        centre = 8 + float((mid * torch.arange(len(mid))).sum() / mid.sum())
        moves.append(centre - 20)
        if centre > 20:  # content moved right: the new left pixels repeat the edge value 0.5
            assert abs(float(out[0]) - 0.5) < 1e-5
    moves = torch.tensor(moves)
    assert moves.abs().max() <= 0.1 * w + 0.5
    assert moves.min() < -0.05 * w and moves.max() > 0.05 * w  # both directions, most of the range


def test_unknown_augmentation() -> None:
    assert create_augmentation(None) is None
    with pytest.raises(InputError, match="augmentation"):
        create_augmentation("kerass")

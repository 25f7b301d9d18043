"""Randomness keyed by ``(seed, sample_uid)`` so results do not depend on worker count or order.

Library code never touches global RNG state; every random transform asks for its own generator.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def derive_seed(seed: int, *keys: object) -> int:
    """Stable 63-bit seed from a base seed and any number of keys (uids, names, indices)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(int(seed)).encode())
    for k in keys:
        h.update(b"\x1f")
        h.update(str(k).encode())
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def numpy_rng(seed: int, *keys: object) -> np.random.Generator:
    """A numpy Generator seeded by ``(seed, *keys)``."""
    return np.random.default_rng(derive_seed(seed, *keys))


def torch_generator(seed: int, *keys: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator seeded by ``(seed, *keys)`` on ``device``."""
    import torch  # here, so that numpy-only users (splits, the torch-free re-run of `train`) skip it

    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g

"""Count-sketch of gradient vectors: a seeded linear map from D dims to k dims.

Inner products are preserved in expectation (``E[<Sa, Sb>] = <a, b>``), which is all gradient
balancing needs: the sign test ``<s, c> < 0`` is taken on sketched vectors, so the cost of
balancing is O(k) per example however large the model is.
"""

from __future__ import annotations

import torch

from medbench.errors import InputError
from medbench.utils.rng import torch_generator


class CountSketch:
    """Seeded count-sketch, hashed per named tensor so no flattening of the full model is needed.

    Args:
        k: Sketch dimension.
        seed: Seed; every process with the same seed gets the same map (needed by CD-GraB).
    """

    def __init__(self, k: int, seed: int = 0) -> None:
        if int(k) < 1:
            raise InputError(f"sketch_dim must be a positive integer, got {k!r}: pass e.g. 1024")
        self.k = int(k)
        self.seed = int(seed)
        self._hashes: dict[tuple[str, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def _hash(self, name: str, numel: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (name, numel, str(device))
        if key not in self._hashes:
            g = torch_generator(self.seed, "countsketch", name, numel)
            buckets = torch.randint(0, self.k, (numel,), generator=g)
            signs = torch.randint(0, 2, (numel,), generator=g).mul_(2).sub_(1)
            self._hashes[key] = (buckets.to(device), signs.to(device))
        return self._hashes[key]

    def apply(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sketch per-example gradients ``{name: (B, *shape)}`` to a ``(B, k)`` tensor."""
        out: torch.Tensor | None = None
        for name, g in grads.items():
            flat = g.reshape(g.shape[0], -1)
            buckets, signs = self._hash(name, flat.shape[1], flat.device)
            if out is None:
                out = flat.new_zeros(flat.shape[0], self.k)
            out.index_add_(1, buckets, flat * signs.to(flat.dtype))
        if out is None:
            raise InputError("no gradients to sketch: the model has no trainable parameters")
        return out

    def apply_flat(self, vectors: torch.Tensor, name: str = "flat") -> torch.Tensor:
        """Sketch rows of a ``(B, D)`` matrix (one hash for the whole vector)."""
        return self.apply({name: vectors})

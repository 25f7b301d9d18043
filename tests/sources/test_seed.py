"""Random initialisation is seeded per call and leaves the global RNG alone."""

from __future__ import annotations

import torch

from medbench.sources import create_source


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_random_source_init_is_seeded_and_global_rng_untouched():
    state = torch.random.get_rng_state()
    a = create_source("random", arch="resnet10t", num_classes=2, seed=1)
    b = create_source("random", arch="resnet10t", num_classes=2, seed=1)
    c = create_source("random", arch="resnet10t", num_classes=2, seed=2)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.equal(_weights(a), _weights(b))
    assert not torch.equal(_weights(a), _weights(c))

"""GraB and the N:M recipes driven through ``engine.fit`` (the integration the engine promises)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import medbench.data.dataset as dataset
import medbench.train.engine as engine


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(torch.relu(self.stem(x)))).amax((2, 3))
        return self.head(torch.relu(self.fc(h)))


def _data(n: int, seed: int) -> object:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 12, 12, generator=gen) * 0.5
    y = torch.randint(0, 2, (n,), generator=gen)
    x[y == 1, :, 4:8, 4:8] += 0.5  # a bright square marks the positives
    return dataset.ArrayDataset(x, y)


def _cfg(**kw: object) -> object:
    base = dict(epochs=3, batch_size=8, lr=3e-3, optimizer="adam", device="cpu", progress=False,
                patience=None, schedule="constant", seed=0, channels_last=False)
    base.update(kw)
    return engine.TrainConfig(**base)


@pytest.mark.slow
def test_fit_with_grab_records_balancing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    res = engine.fit(_Net(), _data(40, 0), _data(16, 1), _cfg(order="grab", order_options={"sketch_dim": 64}),
                     tmp_path / "run")
    s = res.summary["sampler"]
    assert s["order"] == "grab" and s["epochs_balanced"] == 3 and s["balanced_dim"] == 64
    assert s["batches_by_method"] == {"vmap": 3, "tap": 12}  # tap after each epoch's first batch
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in res.model.modules())
    assert res.history["train_loss"].iloc[-1] < res.history["train_loss"].iloc[0]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["srste", "asp", "step"])
def test_fit_with_sparsity_exports_nm_model(tmp_path: Path, recipe: str) -> None:
    from medbench.train.sparsity import check_nm_model

    options = {"t_min": 3, "t_max": 6} if recipe == "step" else {}
    torch.manual_seed(0)
    res = engine.fit(_Net(), _data(40, 0), _data(16, 1),
                     _cfg(sparsity="2:4", sparsity_recipe=recipe, sparsity_options=options),
                     tmp_path / recipe)
    hs = res.summary["hooks_summary"][recipe]
    assert hs["layers"] == ["conv", "fc"]
    assert check_nm_model(res.model, ["conv", "fc"], 2, 4) == {"conv": True, "fc": True}
    assert not hasattr(res.model.conv, "parametrizations")
    if recipe == "step":
        assert hs["switch_step"] is not None and 3 <= hs["switch_step"] <= 6

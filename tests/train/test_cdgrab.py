"""CD-GraB: a 2-process gloo run on CPU reproduces the single-process simulation's per-rank orders."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from torch import nn

from medbench.errors import InputError
from medbench.train.cdgrab import CDGraBSampler, CDGraBSimulator, shard_indices
from medbench.train.grab import gradient_rows
from medbench.train.hooks import ORDERINGS, load_builtin_entries
from medbench.train.sketch import CountSketch

N, W, B, EPOCHS, SEED, K, LR = 40, 2, 4, 3, 3, 8, 0.5


def _problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, 6, generator=gen)
    y = torch.randint(0, 3, (N,), generator=gen)
    return model, x, y


def _batch_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@torch.no_grad()
def _apply(model: nn.Module, per_rank: list[torch.Tensor]) -> None:
    step = torch.stack(per_rank).mean(0)
    k = 0
    for p in model.parameters():
        p -= LR * step[k : k + p.numel()].view_as(p)
        k += p.numel()


def _simulate() -> list[list[list[int]]]:
    model, x, y = _problem()
    sim = CDGraBSimulator(N, W, seed=SEED)
    sketch = CountSketch(K, SEED)
    loss_fn = nn.CrossEntropyLoss()
    epochs = []
    for _ in range(EPOCHS):
        orders = sim.orders()
        epochs.append(orders)
        for k in range(0, len(orders[0]), B):
            idx = [o[k : k + B] for o in orders]
            rows = torch.stack([
                gradient_rows(model, loss_fn, x[i], y[i], sketch=sketch, grad_params=None, chunk_size=None)
                for i in idx
            ])
            sim.step(rows, idx)
            _apply(model, [_batch_grad(model, x[i], y[i]) for i in idx])
        sim.end_epoch()
    return epochs


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=W
    )
    try:
        load_builtin_entries()
        model, x, y = _problem()
        sampler = ORDERINGS.create("cdgrab", dataset_size=N, seed=SEED, sketch_dim=K)
        assert (sampler.rank, sampler.world_size) == (rank, W)
        orders = []
        for epoch in range(EPOCHS):
            sampler.set_epoch(epoch)
            order = list(sampler)
            orders.append(order)
            for k in range(0, len(order), B):
                idx = torch.tensor(order[k : k + B])
                sampler.observe(model, nn.CrossEntropyLoss(), x[idx], y[idx], idx)
                g = _batch_grad(model, x[idx], y[idx])
                parts = [torch.empty_like(g) for _ in range(W)]
                torch.distributed.all_gather(parts, g)
                _apply(model, parts)
            sampler.end_epoch()
        torch.save(orders, Path(out_dir) / f"rank{rank}.pt")
        torch.distributed.barrier()  # no rank tears gloo down while the other still talks to it
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_simulation_orders_are_shard_permutations_that_change() -> None:
    epochs = _simulate()
    shards = shard_indices(N, W, SEED)
    for orders in epochs:
        for r in range(W):
            assert sorted(orders[r]) == sorted(shards[r])
    assert set(shards[0]).isdisjoint(shards[1]) and len(shards[0]) == N // W
    assert epochs[1] != epochs[0] and epochs[2] != epochs[1]
    with pytest.raises(InputError):
        shard_indices(1, 2, 0)


@pytest.mark.slow
def test_two_process_gloo_matches_simulation(tmp_path: Path) -> None:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    torch.multiprocessing.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=W, join=True)
    expected = _simulate()
    for r in range(W):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        assert got == [epoch[r] for epoch in expected], f"rank {r}"


def test_single_process_sampler_equals_one_worker_simulation() -> None:
    s = CDGraBSampler(11, seed=2, sketch_dim=None)
    sim = CDGraBSimulator(11, 1, seed=2)
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(11, 5, generator=gen)
    for _ in range(3):
        order = list(s)
        assert order == sim.orders()[0]
        for k in range(0, len(order), 3):
            idx = order[k : k + 3]
            s.step(grads[idx], idx)
            sim.step(grads[idx][None], [idx])
        s.end_epoch()
        sim.end_epoch()
    s2 = CDGraBSampler(11, seed=2, sketch_dim=None)
    s2.load_state_dict(s.state_dict())
    assert list(s2) == list(s)

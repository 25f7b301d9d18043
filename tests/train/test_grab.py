"""GraB sampler: permutations, stale mean, per-example gradients, herding bound, slow oracle."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medbench.errors import InputError
from medbench.train.grab import GraBSampler, PairBalanceSampler, max_prefix_norm
from medbench.train.hooks import ORDERINGS, load_builtin_entries
from medbench.train.pergrad import flatten_grads, per_example_grads, project_conv_grads
from medbench.train.sketch import CountSketch


def _run_epochs(sampler: GraBSampler, grads: torch.Tensor, epochs: int, batch: int = 4) -> list[list[int]]:
    """Feed fixed per-example gradient rows in visit order; return each epoch's order."""
    orders = []
    for ep in range(epochs):
        sampler.set_epoch(ep)
        order = list(sampler)
        orders.append(order)
        for k in range(0, len(order), batch):
            idx = order[k : k + batch]
            sampler.step(grads[idx], idx)
        sampler.end_epoch()
    return orders


def _slow_mean_balance(grads: list[list[float]], order: list[int], m_prev: list[float]) -> list[int]:
    """GraB's mean balance with python lists: front when ||s + c|| <= ||s - c|| (the authors' tie rule)."""
    d = len(m_prev)
    s = [0.0] * d
    front, back = [], []
    for i in order:
        c = [grads[i][j] - m_prev[j] for j in range(d)]
        plus = sum((s[j] + c[j]) ** 2 for j in range(d)) <= sum((s[j] - c[j]) ** 2 for j in range(d))
        if plus:
            s = [s[j] + c[j] for j in range(d)]
            front.append(i)
        else:
            s = [s[j] - c[j] for j in range(d)]
            back.append(i)
    return front + back[::-1]


def _slow_pair_balance(grads: list[list[float]], order: list[int]) -> list[int]:
    d = len(grads[0])
    s = [0.0] * d
    front, back = [], []
    for k in range(0, len(order) - 1, 2):
        a, b = order[k], order[k + 1]
        diff = [grads[a][j] - grads[b][j] for j in range(d)]
        if sum((s[j] + diff[j]) ** 2 for j in range(d)) <= sum((s[j] - diff[j]) ** 2 for j in range(d)):
            s = [s[j] + diff[j] for j in range(d)]
            front.append(a)
            back.append(b)
        else:
            s = [s[j] - diff[j] for j in range(d)]
            front.append(b)
            back.append(a)
    if len(order) % 2:  # the leftover is signed alone against s
        g = grads[order[-1]]
        lead = sum((s[j] + g[j]) ** 2 for j in range(d)) <= sum((s[j] - g[j]) ** 2 for j in range(d))
        (front if lead else back).append(order[-1])
    return front + back[::-1]


def test_registered_and_bad_options() -> None:
    load_builtin_entries()
    assert isinstance(ORDERINGS.create("grab", dataset_size=5, seed=0), GraBSampler)
    assert isinstance(ORDERINGS.create("pair", dataset_size=5, seed=0), PairBalanceSampler)
    with pytest.raises(InputError, match="balance"):
        GraBSampler(5, balance="median")
    with pytest.raises(InputError, match="granularity"):
        GraBSampler(5, granularity=0)


@pytest.mark.parametrize("cls", [GraBSampler, PairBalanceSampler])
@pytest.mark.parametrize("granularity", [1, 3])
def test_next_order_is_permutation(cls: type, granularity: int) -> None:
    n = 23
    grads = torch.randn(n, 6, generator=torch.Generator().manual_seed(1))
    s = cls(n, seed=3, sketch_dim=None, granularity=granularity)
    orders = _run_epochs(s, grads, epochs=4, batch=5)
    for o in orders + [list(s)]:
        assert sorted(o) == list(range(n))
    assert orders[1] != orders[0]  # balancing reorders


def test_stale_mean_is_previous_epoch_mean() -> None:
    n, d = 17, 5
    s = GraBSampler(n, seed=0, sketch_dim=None)
    g1 = torch.randn(n, d, generator=torch.Generator().manual_seed(2))
    g2 = torch.randn(n, d, generator=torch.Generator().manual_seed(3))
    _run_epochs(s, g1, epochs=1)
    assert torch.allclose(s.m_prev, g1.double().mean(0), atol=1e-12)
    # second epoch: m_prev (g1's mean) is subtracted while g2 is accumulated
    s.set_epoch(1)
    order = list(s)
    s.step(g2[order], order)
    expected = _slow_mean_balance(g2.double().tolist(), order, g1.double().mean(0).tolist())
    s.end_epoch()
    assert list(s) == expected
    assert torch.allclose(s.m_prev, g2.double().mean(0), atol=1e-12)


@pytest.mark.parametrize("n", [12, 13])
def test_mean_and_pair_balance_match_slow_implementation(n: int) -> None:
    d = 4
    gen = torch.Generator().manual_seed(n)
    epoch_grads = [torch.randn(n, d, generator=gen, dtype=torch.float64) for _ in range(3)]
    for cls, slow in [(GraBSampler, "mean"), (PairBalanceSampler, "pair")]:
        s = cls(n, seed=7, sketch_dim=None)
        m_prev = [0.0] * d
        for ep, g in enumerate(epoch_grads):
            s.set_epoch(ep)
            order = list(s)
            if slow == "mean":
                expected = _slow_mean_balance(g.tolist(), order, m_prev)
                m_prev = g.mean(0).tolist()
            else:
                expected = _slow_pair_balance(g.tolist(), order)
            for k in range(0, n, 5):
                s.step(g[order[k : k + 5]], order[k : k + 5])
            s.end_epoch()
            assert list(s) == expected


class _Net(nn.Module):
    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4) if bn else nn.Identity()
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.mark.parametrize("bn", [False, True])
def test_batch_mean_of_per_example_grads_is_minibatch_grad(bn: bool) -> None:
    torch.manual_seed(0)
    net = _Net(bn)
    x = torch.randn(6, 1, 8, 8)
    y = torch.randint(0, 3, (6,))
    loss_fn = nn.CrossEntropyLoss()
    if bn:  # per-example gradients are taken in eval mode: compare with the eval-mode minibatch
        net(x)  # give BatchNorm non-trivial running statistics
        net.eval()
    net.zero_grad()
    loss_fn(net(x), y).backward()
    pe = per_example_grads(net, loss_fn, x, y)
    for name, p in net.named_parameters():
        assert torch.allclose(pe[name].mean(0), p.grad, atol=1e-6), name
    # each row is the gradient of that example alone
    net.zero_grad()
    loss_fn(net(x[2:3]), y[2:3]).backward()
    assert torch.allclose(flatten_grads(pe)[2], torch.cat([p.grad.flatten() for p in net.parameters()]), atol=1e-6)
    assert net.training is (not bn)  # flags restored


def test_count_sketch_preserves_inner_products() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 20000, generator=gen, dtype=torch.float64)
    sk = CountSketch(4096, seed=1)
    sa, sb = sk.apply_flat(torch.stack([a, b]))
    assert abs(float(sa.norm() ** 2) / float(a.norm() ** 2) - 1) < 0.1
    assert abs(float(sa @ sb) - float(a @ b)) < 0.1 * float(a.norm() * b.norm())
    # linear and deterministic per seed
    assert torch.allclose(sk.apply_flat((a + 2 * b)[None])[0], sa + 2 * sb)
    assert torch.equal(CountSketch(4096, seed=1).apply_flat(a[None]), sa[None])


def test_herding_bound_lower_than_random_reshuffling() -> None:
    n, d = 256, 16
    gen = torch.Generator().manual_seed(5)
    grads = torch.randn(n, d, generator=gen) + 0.5 * torch.randn(d, generator=gen)
    s = GraBSampler(n, seed=0, sketch_dim=None)
    orders = _run_epochs(s, grads, epochs=3, batch=16)
    grab_bound = max_prefix_norm(grads, list(s))
    rr = [max_prefix_norm(grads, torch.randperm(n, generator=gen)) for _ in range(20)]
    # independent check of max_prefix_norm on one order
    c = grads.double()[orders[0]] - grads.double().mean(0)
    direct = max(float(c[: k + 1].sum(0).norm()) for k in range(n))
    assert abs(direct - max_prefix_norm(grads, orders[0])) < 1e-9
    assert grab_bound < 0.35 * min(rr)


def test_observe_with_sketch_and_state_roundtrip() -> None:
    torch.manual_seed(1)
    net = _Net()
    x = torch.randn(10, 1, 8, 8)
    y = torch.randint(0, 3, (10,))
    s = GraBSampler(10, seed=2, sketch_dim=32, chunk_size=4)
    for ep in range(2):
        s.set_epoch(ep)
        order = list(s)
        for k in range(0, 10, 4):
            idx = torch.tensor(order[k : k + 4])
            s.observe(net, nn.CrossEntropyLoss(), x[idx], y[idx], idx)
        s.end_epoch()
    summ = s.summary()
    assert summ["balanced_dim"] == 32 and summ["epochs_balanced"] == 2 and summ["observe_calls"] == 6
    s2 = GraBSampler(10, seed=2, sketch_dim=32)
    s2.load_state_dict(s.state_dict())
    assert list(s2) == list(s) and torch.equal(s2.m_prev, s.m_prev)
    with pytest.raises(InputError):
        GraBSampler(11, seed=2).load_state_dict(s.state_dict())


class _TapNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(4, 4, (3, 2), dilation=(1, 2), padding=(1, 0), bias=False)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 4 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.c2(self.act(self.c1(x)))).flatten(1))


def test_grad_tap_equals_vmap_per_example_grads() -> None:
    from medbench.train.pergrad import GradTap

    torch.manual_seed(0)
    net = _TapNet()
    x, y = torch.randn(5, 2, 8, 8), torch.randint(0, 3, (5,))
    tap = GradTap(net)
    assert tap.supported and set(tap.layers) == {"c1", "c2", "fc"}
    tap.attach()
    with torch.no_grad():
        net(x[:2])  # an evaluation pass is ignored
    nn.CrossEntropyLoss()(net(x), y).backward()
    assert tap.ready(x) and not tap.ready(x.clone())  # only the batch that was trained on
    got = tap.grads()
    ref = per_example_grads(net, nn.CrossEntropyLoss(), x, y)
    assert set(got) == set(ref)
    for name in ref:
        assert torch.allclose(got[name], ref[name], atol=1e-5), name
    # projected conv gradients: a conv with random filters on the tap path = projecting vmap's
    nn.CrossEntropyLoss()(net(x), y).backward()
    got = tap.grads(conv_proj=4, seed=3)
    proj_ref = project_conv_grads(ref, net, 4, seed=3)
    assert got["c1.weight"].shape == (5, 4, 4) and got["c2.weight"].shape == (5, 4, 4)
    for name in ref:
        assert torch.allclose(got[name], proj_ref[name], atol=1e-5), name
    tap.detach()
    assert not GradTap(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))).supported


def test_conv_projection_keeps_inner_products() -> None:
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(2, 3, 64, 5, 5, generator=gen, dtype=torch.float64)
    conv = nn.Conv2d(64, 3, 5)
    p = project_conv_grads({"weight": g.float()}, conv, 1000, seed=1)["weight"].double()
    assert p.shape == (2, 3, 1000)  # the 64*5*5 patch axis projected to 1000 dims
    exact = float((g[0] * g[1]).sum())
    assert abs(float((p[0] * p[1]).sum()) - exact) < 0.1 * float(g[0].norm() * g[1].norm())
    assert abs(float(p[0].norm() ** 2) / float(g[0].norm() ** 2) - 1) < 0.1


@pytest.mark.parametrize("conv_proj", [None, 4])
def test_sampler_uses_tap_after_first_batch(conv_proj: int | None) -> None:
    torch.manual_seed(0)
    net = _TapNet()
    x, y = torch.randn(12, 2, 8, 8), torch.randint(0, 3, (12,))
    loss_fn = nn.CrossEntropyLoss()
    rows = {}
    for method in ("tap", "vmap"):
        s = GraBSampler(12, seed=0, sketch_dim=16, method=method, conv_proj=conv_proj)
        s.set_epoch(0)
        order = list(s)
        for k in range(0, 12, 4):
            idx = torch.tensor(order[k : k + 4])
            xb, yb = x[idx], y[idx]
            net.zero_grad()
            loss_fn(net(xb), yb).backward()
            s.observe(net, loss_fn, xb, yb, idx)
        s.end_epoch()
        rows[method] = (list(s), s.summary()["batches_by_method"], s.m_prev)
        if method == "tap":  # a batch other than the one just trained on falls back to vmap
            s.set_epoch(1)
            s.observe(net, loss_fn, x[:4], y[:4], torch.arange(4))
            assert s.summary()["batches_by_method"] == {"vmap": 2, "tap": 2}
        s.source.close()
    assert rows["tap"][1] == {"vmap": 1, "tap": 2} and rows["vmap"][1] == {"vmap": 3, "tap": 0}
    assert rows["tap"][0] == rows["vmap"][0]  # same gradients -> same next order
    assert torch.allclose(rows["tap"][2], rows["vmap"][2], atol=1e-5)
    # auto with a norm layer: balance on the Linear parameters only, same rows from vmap and tap
    ln = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    s = GraBSampler(6, seed=0, sketch_dim=None)
    xs, ys = torch.randn(6, 3), torch.randint(0, 2, (6,))
    for k in (0, 3):
        xb, yb = xs[k : k + 3], ys[k : k + 3]
        nn.CrossEntropyLoss()(ln(xb), yb).backward()
        s.observe(ln, nn.CrossEntropyLoss(), xb, yb, torch.arange(k, k + 3))
    assert s.summary()["batches_by_method"] == {"vmap": 1, "tap": 1}
    assert s.grad_dim == 3 * 4 + 4 + 4 * 2 + 2
    s.source.close()
    with pytest.raises(InputError, match="tap"):
        GraBSampler(4, method="tap").observe(
            nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)), nn.MSELoss(),
            torch.randn(4, 2), torch.randn(4, 2), torch.arange(4),
        )


def test_microbatch_granularity_balances_unit_means() -> None:
    n, b, d = 14, 3, 4
    gen = torch.Generator().manual_seed(9)
    grads = torch.randn(n, d, generator=gen, dtype=torch.float64)
    s = GraBSampler(n, seed=1, sketch_dim=None, granularity=b)
    units = s.units
    assert sorted(i for u in units for i in u) == list(range(n)) and len(units) == 5
    s.set_epoch(0)
    order = list(s)
    visit = [next(u for u, members in enumerate(units) if members[0] == i) for i in order if any(m[0] == i for m in units)]
    unit_grads = [grads[units[u]].mean(0).tolist() for u in range(len(units))]
    expected_units = _slow_mean_balance(unit_grads, visit, [0.0] * d)
    for k in range(0, n, 4):  # batches that split units across steps
        s.step(grads[order[k : k + 4]], order[k : k + 4])
    s.end_epoch()
    assert list(s) == [i for u in expected_units for i in units[u]]
    assert torch.allclose(s.m_prev, torch.tensor(unit_grads, dtype=torch.float64).mean(0))


@pytest.mark.parametrize("cls", [GraBSampler, PairBalanceSampler])
def test_mid_epoch_resume_gives_the_uninterrupted_order(cls: type) -> None:
    n = 15
    grads = torch.randn(n, 4, generator=torch.Generator().manual_seed(4))
    a = cls(n, seed=5, sketch_dim=None, granularity=2)
    _run_epochs(a, grads, epochs=1)
    a.set_epoch(1)
    order = list(a)
    a.step(grads[order[:5]], order[:5])
    b = cls(n, seed=5, sketch_dim=None, granularity=2)
    b.load_state_dict(torch.load(_roundtrip(a.state_dict()), weights_only=True))
    assert list(b) == order
    for s in (a, b):
        s.step(grads[order[5:]], order[5:])
        s.end_epoch()
    assert list(a) == list(b) and torch.equal(a.m_prev, b.m_prev)


def _roundtrip(state: dict) -> object:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf

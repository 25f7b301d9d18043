"""N:M masks, SR-STE backward, ASP, STEP's AutoSwitch and export."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from medbench.errors import InputError
from medbench.train.hooks import SPARSITY, load_builtin_entries
from medbench.train.nm_mask import (
    eligible_layers,
    group_nonzeros,
    nm_mask,
    parse_pattern,
    satisfies_nm,
)
from medbench.train.sparsity import (
    ASPHook,
    SRSTEHook,
    STEPHook,
    check_nm_model,
    semi_structured_supported,
    srste,
    to_semi_structured,
)
from medbench.train.step_adam import StepAdam


def test_parse_pattern() -> None:
    assert parse_pattern("2:4") == (2, 4)
    assert parse_pattern(" 1:8 ") == (1, 8)
    for bad in ["4:2", "0:4", "2:2", "a:b", "2-4", "2:4:8"]:
        with pytest.raises(InputError, match="pattern"):
            parse_pattern(bad)


def _groups_by_hand(w: torch.Tensor, m: int) -> list[list[float]]:
    """Groups of m consecutive weights along the input dim, built with explicit loops."""
    groups = []
    if w.ndim == 2:
        for o in range(w.shape[0]):
            for i0 in range(0, w.shape[1], m):
                groups.append([float(w[o, i]) for i in range(i0, i0 + m)])
    else:
        for o in range(w.shape[0]):
            for h in range(w.shape[2]):
                for k in range(w.shape[3]):
                    for i0 in range(0, w.shape[1], m):
                        groups.append([float(w[o, i, h, k]) for i in range(i0, i0 + m)])
    return groups


@settings(max_examples=40, deadline=None)
@given(
    nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 8)]),
    out=st.integers(1, 5),
    k=st.integers(1, 3),
    conv=st.booleans(),
    kh=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_mask_has_at_most_n_per_group(nm: tuple[int, int], out: int, k: int, conv: bool, kh: int, seed: int) -> None:
    n, m = nm
    shape = (out, m * k, kh, kh) if conv else (out, m * k)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if seed % 3 == 0:  # ties and zeros
        w = w.round()
    mask = nm_mask(w, n, m)
    assert mask.shape == w.shape
    masked = w * mask
    for g_w, g_mask, g_masked in zip(
        _groups_by_hand(w, m), _groups_by_hand(mask.float(), m), _groups_by_hand(masked, m), strict=True
    ):
        assert sum(g_mask) == n
        assert sum(v != 0 for v in g_masked) <= n
        kept = [abs(v) for v, keep in zip(g_w, g_mask, strict=True) if keep]
        dropped = [abs(v) for v, keep in zip(g_w, g_mask, strict=True) if not keep]
        assert min(kept) >= max(dropped)
    assert satisfies_nm(masked, n, m)
    assert int(group_nonzeros(masked, m).max()) <= n


def test_conv_groups_run_along_input_channels() -> None:
    w = torch.zeros(1, 4, 1, 2)
    w[0, :, 0, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # one group of 4 input channels
    w[0, :, 0, 1] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    mask = nm_mask(w, 2, 4)
    assert mask[0, :, 0, 0].tolist() == [False, False, True, True]
    assert mask[0, :, 0, 1].tolist() == [True, True, False, False]
    with pytest.raises(InputError, match="not divisible"):
        nm_mask(torch.randn(3, 6), 2, 4)


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.odd = nn.Linear(8, 6)
        self.mid = nn.Linear(6, 8)  # input dim 6: not divisible by 4
        self.fc1 = nn.Linear(8, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(torch.relu(self.stem(x)))).mean((2, 3))
        return self.head(torch.relu(self.fc1(torch.relu(self.mid(torch.relu(self.odd(h)))))))


def test_eligible_layers_skip_rules() -> None:
    net = _CNN()
    assert list(eligible_layers(net, 4)) == ["conv", "odd", "fc1"]
    assert list(eligible_layers(net, 4, skip=["od*"])) == ["conv", "fc1"]
    assert list(eligible_layers(net, 4, skip_first=False, skip_last=False)) == ["conv", "odd", "fc1", "head"]
    with pytest.raises(InputError, match="'mid'"):
        eligible_layers(net, 4, strict=True)


def test_srste_backward_equals_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 8, generator=gen, requires_grad=True)
    r = torch.randn(6, 8, generator=gen)
    lam = 0.3
    (srste(w, 2, 4, lam) * r).sum().backward()
    mask = nm_mask(w.detach(), 2, 4).float()
    assert torch.allclose(w.grad, r + lam * (1 - mask) * w.detach())
    # through a parametrized Linear: the dense weight gets d loss/d(W*mask) + lam (1-mask) W
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 2))
    ref = copy.deepcopy(net)
    hook = SRSTEHook("2:4", lambda_w=0.1)
    hook.on_train_start(net, torch.optim.SGD(net.parameters(), lr=0.1))
    assert list(hook.layers) == ["2"]
    x, y = torch.randn(5, 4), torch.randn(5, 2)
    ((net(x) - y) ** 2).mean().backward()
    dense = ref[2].weight.detach().clone()
    mask2 = nm_mask(dense, 2, 4).float()
    with torch.no_grad():
        ref[2].weight.mul_(mask2)
    ((ref(x) - y) ** 2).mean().backward()
    expected = ref[2].weight.grad + 0.1 * (1 - mask2) * dense
    assert torch.allclose(net[2].parametrizations.weight.original.grad, expected, atol=1e-7)
    assert torch.allclose(net[0].weight.grad, ref[0].weight.grad, atol=1e-7)


def _toy_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 16, generator=gen)
    true = torch.randn(16, 1, generator=gen)
    y = x @ true + 0.1 * torch.randn(256, 1, generator=gen)
    return x, y


def test_autoswitch_fires_and_matches_independent_adam() -> None:
    x, y = _toy_data()
    torch.manual_seed(0)
    model = nn.Linear(16, 1)
    twin = copy.deepcopy(model)
    window, threshold = 10, 0.3
    opt = StepAdam(model.parameters(), lr=1e-2, window=window, threshold=threshold, t_min=15,
                   t_max=10_000)
    opt.set_masked_params([model.weight])
    ref = torch.optim.Adam(twin.parameters(), lr=1e-2)
    v_prev = torch.zeros_like(twin.weight)  # Adam's un-bias-corrected v_0
    z_ref: list[float] = []
    for t in range(1, 2000):
        idx = torch.arange(t * 16, t * 16 + 16) % 256
        for net, o in ((model, opt), (twin, ref)):
            o.zero_grad()
            ((net(x[idx]) - y[idx]) ** 2).mean().backward()
            o.step()
        v = ref.state[twin.weight]["exp_avg_sq"]
        z_ref.append(float((v - v_prev).abs().mean()))
        v_prev = v.clone()
        if opt.phase == 2:
            break
    assert opt.switch_reason == "autoswitch"
    assert opt.switch_step == t and opt.switch_step >= 15
    assert torch.allclose(torch.tensor(opt.metrics), torch.tensor(z_ref), rtol=1e-4, atol=0)
    # the statistic: window mean over the largest window mean so far; first step >= t_min below it
    means = [sum(z_ref[k - window : k]) / window for k in range(window, len(z_ref) + 1)]
    peaks = [max(means[: i + 1]) for i in range(len(means))]
    stats = [m_ / p_ for m_, p_ in zip(means, peaks, strict=True)]
    first = next(k for k, st_ in zip(range(window, len(z_ref) + 1), stats, strict=True)
                 if k >= 15 and st_ < threshold)
    assert first == opt.switch_step  # metric k covers step k (v_0 = 0)
    assert torch.allclose(torch.tensor(opt.statistic), torch.tensor(stats), rtol=1e-4)
    assert torch.allclose(model.weight, twin.weight, atol=1e-6)  # phase 1 is plain Adam
    # phase 2: second moment frozen, update clamped when asked
    v_frozen = opt.state[model.weight]["v_frozen"].clone()
    assert torch.allclose(v_frozen, ref.state[twin.weight]["exp_avg_sq"] / (1 - 0.999**t), rtol=1e-5)
    before = model.weight.detach().clone()
    opt.zero_grad()
    (1e3 * ((model(x) - y) ** 2).mean()).backward()
    opt.step()
    assert torch.equal(opt.state[model.weight]["v_frozen"], v_frozen)
    step_size = (model.weight.detach() - before).abs()
    assert float(step_size.max()) <= 1e-2 * (1 + 1e-4)  # |update| <= clamp * lr
    assert float(step_size.max()) >= 1e-2 * (1 - 1e-4)  # the 1000x gradient hit the clamp
    # checkpoint round trip keeps the phase
    opt2 = StepAdam(copy.deepcopy(model).parameters(), lr=1e-2)
    opt2.load_state_dict(opt.state_dict())
    assert (opt2.phase, opt2.switch_step, opt2.switch_reason) == (2, opt.switch_step, "autoswitch")


def test_phase2_update_without_clamp_is_steps_formula() -> None:
    x, y = _toy_data(3)
    torch.manual_seed(0)
    model = nn.Linear(16, 1)
    opt = StepAdam(model.parameters(), lr=1e-2, t_min=0, t_max=3, clamp=None)
    for _ in range(3):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    assert opt.phase == 2 and opt.clamp is None
    st = opt.state[model.weight]
    m_prev, vf = st["exp_avg"].clone(), st["v_frozen"].clone()
    before = model.weight.detach().clone()
    opt.zero_grad()
    (1e3 * ((model(x) - y) ** 2).mean()).backward()
    g = model.weight.grad.clone()
    opt.step()
    m = 0.9 * m_prev + 0.1 * g
    expected = before - 1e-2 * (m / (1 - 0.9**4)) / (vf.sqrt() + 1e-8)  # STEP's phase-2 update
    assert torch.allclose(model.weight.detach(), expected, rtol=1e-5, atol=1e-7)
    assert float((before - expected).abs().max()) > 1e-2  # a clamp at 1 * lr would have cut it


def _digits_switch_step(lr: float) -> tuple[int | None, str | None]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = StepAdam(net.parameters(), lr=lr, window=20, threshold=0.5, t_min=20, t_max=3000)
    opt.set_masked_params([net[2].weight])
    gen = torch.Generator().manual_seed(0)
    batch, perm, k = 128, torch.randperm(len(y), generator=gen), 0
    while opt.phase == 1:
        if k + batch > len(y):
            perm, k = torch.randperm(len(y), generator=gen), 0
        idx = perm[k : k + batch]
        k += batch
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    return opt.switch_step, opt.switch_reason


def test_autoswitch_step_moves_with_learning_rate() -> None:
    """A smaller learning rate switches later (STEP: the switch tracks when v has settled).

    Adam moves every weight by about ``lr`` per step, so the gradient distribution, and with it the
    second moment ``v``, drifts about 10x slower per step at lr 2e-4 than at 2e-3: its per-step
    change takes correspondingly more steps to fall from its peak, and AutoSwitch fires later.
    A fixed warm-up (the old statistic) fired at the same step for both. Measured on this task:
    about 125-140 steps at 2e-3 and 440-560 at 2e-4 (seeds 0-1), so a factor of 2 is a safe margin.
    """
    fast, why_fast = _digits_switch_step(2e-3)
    slow, why_slow = _digits_switch_step(2e-4)
    assert why_fast == why_slow == "autoswitch"
    assert fast is not None and slow is not None
    assert 2 * fast < slow


def test_t_max_forces_switch() -> None:
    x, y = _toy_data(1)
    model = nn.Linear(16, 1)
    opt = StepAdam(model.parameters(), lr=1e-3, threshold=0.0, t_min=0, t_max=7, normalise="none")
    for _ in range(7):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    assert (opt.phase, opt.switch_step, opt.switch_reason) == (2, 7, "t_max")


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 32)
        self.hidden = nn.Linear(32, 32)
        self.out = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(torch.relu(self.inp(x)))))


class _Cfg:
    epochs = 4
    lr = 1e-2
    weight_decay = 0.0
    optimizer = "adam"


def _train_with_hook(hook: object, epochs: int = 4) -> tuple[nn.Module, float, list[bool]]:
    x, y = _toy_data(2)
    torch.manual_seed(0)
    model = _MLP()
    opt = hook.make_optimizer(list(model.parameters()), _Cfg()) or torch.optim.Adam(model.parameters(), lr=1e-2)
    hook.on_train_start(model, opt)
    sparse_during = []
    step = 0
    for epoch in range(epochs):
        for k in range(0, 256, 32):
            opt.zero_grad()
            loss = ((model(x[k : k + 32]) - y[k : k + 32]) ** 2).mean()
            loss.backward()
            hook.after_backward(model, step)
            opt.step()
            hook.after_step(model, opt, step)
            step += 1
            sparse_during.append(satisfies_nm(model.hidden.weight, 2, 4))
        hook.on_epoch_end(model, epoch)
    model = hook.on_train_end(model)
    with torch.no_grad():
        final = float(((model(x) - y) ** 2).mean())
    return model, final, sparse_during


@pytest.mark.parametrize("recipe", ["srste", "asp", "step"])
def test_recipes_train_and_export(recipe: str) -> None:
    load_builtin_entries()
    options = {"t_min": 5, "t_max": 12} if recipe == "step" else {}
    hook = SPARSITY.create(recipe, pattern="2:4", **options)
    model, final, sparse_during = _train_with_hook(hook)
    assert list(hook.layers) == ["hidden"]
    assert check_nm_model(model, ["hidden"], 2, 4) == {"hidden": True}
    assert not hasattr(model.hidden, "parametrizations")
    assert abs(hook.summary()["density"]["hidden"] - 0.5) < 1e-9
    assert final < 0.5 * float(_toy_data(2)[1].var())  # it learned despite the mask
    if recipe == "srste":  # the effective (parametrized) weight is sparse at every step
        assert all(sparse_during)
    if recipe == "asp":
        assert hook.summary()["pruned_after_epoch"] == 1  # prune_epoch = epochs // 2
        assert not any(sparse_during[:16]) and all(sparse_during[16:])
    if recipe == "step":
        s = hook.summary()
        assert s["switch_step"] is not None and 5 <= s["switch_step"] <= 12
        assert sparse_during[s["switch_step"] - 1] and not sparse_during[0]


def test_hook_options_are_validated() -> None:
    with pytest.raises(InputError, match="pattern"):
        SRSTEHook("4:4")
    with pytest.raises(InputError, match="prune_epoch"):
        ASPHook("2:4", prune_epoch=-1)
    with pytest.raises(InputError, match="StepAdam"):
        STEPHook("2:4").on_train_start(_MLP(), torch.optim.SGD(_MLP().parameters(), lr=0.1))


def test_semi_structured_skips_cleanly_without_cuda() -> None:
    if semi_structured_supported():
        pytest.skip("CUDA sm80+ present: covered by the gpu test")
    model = _MLP()
    assert to_semi_structured(model) == []
    assert model.hidden.weight.device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not semi_structured_supported(), reason="needs CUDA with compute capability 8.0+")
def test_semi_structured_matches_dense_on_gpu() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 8))
    with torch.no_grad():
        model[2].weight.mul_(nm_mask(model[2].weight, 2, 4))
    x = torch.randn(64, 128)
    dense = model.to("cuda", torch.float16)(x.to("cuda", torch.float16))
    converted = to_semi_structured(model, ["2"])
    assert converted == ["2"]
    out = model(x.to("cuda", torch.float16))
    assert torch.allclose(out, dense, rtol=1e-2, atol=1e-2)

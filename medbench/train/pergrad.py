"""Per-example gradients with ``torch.func`` (``vmap(grad(...))`` over ``functional_call``).

BatchNorm and dropout: a single example has no batch statistics, so per-example gradients are
taken with the model in **eval mode** (BatchNorm uses its running statistics, dropout is off) and
no buffer is updated. They are therefore the gradients of the eval-mode network at the current
weights; for models without BatchNorm/dropout they are exact, and their batch mean equals the
minibatch ``.grad`` of a mean-reduced loss.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from medbench.errors import InputError
from medbench.train.optim import eval_mode
from medbench.utils.rng import torch_generator

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def select_params(
    model: nn.Module, patterns: Sequence[str] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split trainable parameters into (selected, rest) by fnmatch ``patterns`` (None: all)."""
    chosen: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        keep = p.requires_grad and (
            patterns is None or any(fnmatch.fnmatchcase(name, pat) for pat in patterns)
        )
        (chosen if keep else rest)[name] = p.detach()
    if not chosen:
        raise InputError(
            f"grad_params={list(patterns or [])!r} matches no trainable parameter: "
            "pass fnmatch patterns of parameter names, e.g. ['fc.*'], or None for all"
        )
    return chosen, rest


def per_example_grads(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    param_patterns: Sequence[str] | None = None,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Gradients of ``loss_fn`` for each example separately.

    Args:
        model: The network (its training flags are restored afterwards).
        loss_fn: Mean-reduced loss ``loss_fn(outputs, targets)``.
        inputs: Batch ``(B, ...)``.
        targets: Batch ``(B, ...)``.
        param_patterns: fnmatch patterns of the parameters to differentiate (None: all trainable).
        chunk_size: Examples per vmap chunk (bounds memory); None: the whole batch.

    Returns:
        ``{name: (B, *param.shape)}``.
    """
    if inputs.shape[0] != targets.shape[0]:
        raise InputError(
            f"inputs and targets disagree on batch size ({inputs.shape[0]} vs {targets.shape[0]})"
        )
    chosen, rest = select_params(model, param_patterns)
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def loss_one(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**p, **rest}, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0))

    with eval_mode(model):
        fn = vmap(grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk_size)
        return fn(chosen, inputs, targets)


def flatten_grads(grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """Concatenate ``{name: (B, ...)}`` into one ``(B, D)`` matrix."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)


class GradTap:
    """Per-example gradients of Linear/Conv2d layers from the training step's own forward/backward.

    A forward hook keeps each tapped layer's input and registers a tensor hook on its output that
    keeps the output gradient. For a mean-reduced loss over ``B`` examples the gradient of example
    ``i`` is ``B * go_i^T a_i`` (Linear) or ``B * go_i @ unfold(a_i)^T`` (Conv2d), with no second
    forward pass. BatchNorm in train mode couples the examples of a batch, so these are the
    gradients of each example's loss through the batch statistics (not of an eval-mode model).

    Args:
        model: The network.
        param_patterns: fnmatch patterns of the parameters wanted (None: all trainable).
    """

    def __init__(self, model: nn.Module, param_patterns: Sequence[str] | None = None) -> None:
        chosen, _ = select_params(model, param_patterns)
        self.model = model
        self.layers: dict[str, nn.Module] = {}
        self.param_names: dict[str, tuple[str | None, str | None]] = {}
        covered: set[str] = set()
        for mod_name, mod in model.named_modules():
            if not self._supported(mod):
                continue
            prefix = f"{mod_name}." if mod_name else ""
            w = next((prefix + k for k in ("weight", "parametrizations.weight.original")
                      if prefix + k in chosen), None)
            b = prefix + "bias" if prefix + "bias" in chosen else None
            if w or b:
                self.layers[mod_name] = mod
                self.param_names[mod_name] = (w, b)
                covered.update(x for x in (w, b) if x)
        self.covered = sorted(covered)
        self.supported = covered == set(chosen)
        self._store: dict[str, list[torch.Tensor | None]] = {}
        self._handles: list[Any] = []
        self._root_input: torch.Tensor | None = None

    @staticmethod
    def _supported(mod: nn.Module) -> bool:
        if isinstance(mod, nn.Linear):
            return True
        return isinstance(mod, nn.Conv2d) and mod.groups == 1 and mod.padding_mode == "zeros" \
            and not isinstance(mod.padding, str)

    def attach(self) -> None:
        """Register the hooks (idempotent)."""
        if self._handles:
            return
        self._handles.append(self.model.register_forward_pre_hook(self._root_hook))
        for name, mod in self.layers.items():
            self._handles.append(mod.register_forward_hook(self._forward_hook(name)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._store = {}
        self._root_input = None

    def _root_hook(self, mod: nn.Module, args: tuple[Any, ...]) -> None:
        if torch.is_grad_enabled() and mod.training and args:
            self._root_input = args[0]
            self._store = {}

    def _forward_hook(self, name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            if not (torch.is_grad_enabled() and mod.training and out.requires_grad):
                return
            slot: list[torch.Tensor | None] = [args[0].detach(), None]
            self._store[name] = slot

            def keep_grad(g: torch.Tensor) -> None:
                slot[1] = g.detach()

            out.register_hook(keep_grad)

        return hook

    def ready(self, inputs: torch.Tensor) -> bool:
        """True when the last training forward (and its backward) was on exactly ``inputs``."""
        if self._root_input is not inputs:
            return False
        batch = inputs.shape[0]
        for name in self.layers:
            slot = self._store.get(name)
            if slot is None or slot[1] is None or slot[0] is None or slot[0].shape[0] != batch:
                return False
        return True

    def grads(self, conv_proj: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
        """``{param name: (B, *shape)}`` from the last captured step (then cleared).

        With ``conv_proj=r`` a Conv2d weight gradient comes back projected, ``(B, out, r)``
        (see :func:`project_conv_grads`), computed by a conv with r random filters instead of
        unfolding every patch: much cheaper for wide layers.
        """
        out: dict[str, torch.Tensor] = {}
        for name, mod in self.layers.items():
            a, go = self._store[name]
            assert a is not None and go is not None
            a, go = a.float(), go.float()
            batch = a.shape[0]
            w_name, b_name = self.param_names[name]
            if isinstance(mod, nn.Linear):
                a3, go3 = a.reshape(batch, -1, a.shape[-1]), go.reshape(batch, -1, go.shape[-1])
                gw = torch.einsum("blo,bli->boi", go3, a3)
                gb = go3.sum(1)
            else:
                go3 = go.reshape(batch, go.shape[1], -1)
                gb = go3.sum(2)
                k_dim = mod.weight[0].numel()
                if conv_proj is not None and w_name is not None and k_dim > conv_proj:
                    proj = _shared_projection(w_name, k_dim, conv_proj, seed, a.device)
                    filters = proj.T.reshape(conv_proj, *mod.weight.shape[1:])
                    cols = nn.functional.conv2d(a, filters, None, mod.stride, mod.padding, mod.dilation)
                    gw = torch.bmm(go3, cols.reshape(batch, conv_proj, -1).transpose(1, 2))
                else:
                    cols = nn.functional.unfold(a, mod.kernel_size, mod.dilation, mod.padding, mod.stride)
                    gw = torch.bmm(go3, cols.transpose(1, 2)).reshape(batch, *mod.weight.shape)
            if w_name is not None:
                out[w_name] = gw * batch
            if b_name is not None:
                out[b_name] = gb * batch
        self._store = {}
        self._root_input = None
        return out


def projection(name: str, k_dim: int, r: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Seeded Gaussian map ``(k_dim, r)`` scaled by ``1/sqrt(r)`` (inner products kept in expectation)."""
    g = torch_generator(seed, "conv-projection", name, k_dim, r)
    return (torch.randn(k_dim, r, generator=g) / r**0.5).to(device)


# The maps depend only on their arguments; the per-step gradient paths reuse them (read-only)
# instead of redrawing and copying one to the device for every layer at every step.
_shared_projection = functools.lru_cache(maxsize=512)(projection)


def project_conv_grads(
    grads: dict[str, torch.Tensor], model: nn.Module, r: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Project each Conv2d weight gradient ``(B, out, in, kh, kw)`` to ``(B, out, r)``.

    The map multiplies the flattened ``(in*kh*kw)`` patch axis by :func:`projection`; layers with
    at most ``r`` patch entries are left as they are. Applied on both the vmap and the tap path,
    so rows from either are the same linear function of the gradient.
    """
    convs = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            prefix = f"{mod_name}." if mod_name else ""
            for key in ("weight", "parametrizations.weight.original"):
                convs[prefix + key] = mod
    out = {}
    for name, g in grads.items():
        if name in convs and g[0].numel() // g.shape[1] > r and g.ndim == 5:
            k_dim = g[0, 0].numel()
            out[name] = g.reshape(g.shape[0], g.shape[1], k_dim) @ _shared_projection(name, k_dim, r, seed, g.device)
        else:
            out[name] = g
    return out

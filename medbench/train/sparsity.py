"""N:M sparsity recipes as engine hooks: "srste", "asp" and "step", plus export.

- **SR-STE** (Zhou et al. 2021): every forward uses ``W * mask(W)`` with the mask recomputed from
  the current magnitudes; the backward passes the gradient straight through to the dense ``W`` and
  adds ``lambda_w * (1 - mask) * W`` (a decay pulling pruned weights towards zero).
- **ASP** (NVIDIA Apex): train dense for ``prune_epoch`` epochs, prune once by magnitude, then
  fine-tune with masked gradients and weights (the mask stays fixed).
- **STEP** (Lu et al. 2023): :class:`~medbench.train.step_adam.StepAdam` runs dense Adam until
  AutoSwitch fires, then freezes Adam's second moment and learns the mask SR-STE style.

Masked layers carry a ``torch.nn.utils.parametrize`` parametrization from ``on_train_start`` on, so
checkpoint keys are stable through a run (``layer.parametrizations.weight.original``); at the end
:func:`export_nm` bakes the masks in and removes it. :func:`to_semi_structured` converts eligible
Linear layers to PyTorch's 2:4 semi-structured tensors for inference on CUDA (sm80+).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from medbench.errors import InputError
from medbench.train.hooks import SPARSITY, TrainHook
from medbench.train.nm_mask import eligible_layers, nm_mask, parse_pattern, satisfies_nm
from medbench.train.step_adam import StepAdam

logger = logging.getLogger(__name__)


class _SRSTEFunction(torch.autograd.Function):
    """Forward ``w * mask``; backward ``grad + decay * (1 - mask) * w`` (straight-through)."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, mask: torch.Tensor, decay: float) -> torch.Tensor:
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        return weight * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        weight, mask = ctx.saved_tensors
        return grad + ctx.decay * (~mask) * weight, None, None


def srste(weight: torch.Tensor, n: int, m: int, decay: float = 2e-4) -> torch.Tensor:
    """SR-STE sparse weight: N:M mask from ``|weight|``, decay on the pruned part in backward."""
    return _SRSTEFunction.apply(weight, nm_mask(weight, n, m), decay)


class NMParametrization(nn.Module):
    """Parametrization giving a layer its SR-STE sparse weight (identity while ``active`` is False)."""

    def __init__(self, n: int, m: int, decay: float, active: bool = True) -> None:
        super().__init__()
        self.n, self.m, self.decay, self.active = n, m, float(decay), active

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return weight
        return srste(weight, self.n, self.m, self.decay)


def _parametrizations(module: nn.Module) -> list[NMParametrization]:
    if not parametrize.is_parametrized(module, "weight"):
        return []
    return [p for p in module.parametrizations.weight if isinstance(p, NMParametrization)]


def raw_weight(module: nn.Module) -> torch.Tensor:
    """The dense trained tensor of a layer (under a parametrization: its ``original``)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def export_nm(model: nn.Module, layers: dict[str, nn.Module], n: int, m: int) -> dict[str, float]:
    """Bake N:M masks into ``layers`` (removing SR-STE parametrizations); returns layer densities.

    A layer whose weights do not already satisfy the pattern (e.g. best weights from a dense
    epoch) is pruned by magnitude, with a warning.
    """
    density: dict[str, float] = {}
    for name, mod in layers.items():
        if _parametrizations(mod):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
        with torch.no_grad():
            if not satisfies_nm(mod.weight, n, m):
                logger.warning("export: %s did not satisfy %d:%d; pruned by magnitude", name, n, m)
                mod.weight.mul_(nm_mask(mod.weight, n, m))
        density[name] = float((mod.weight != 0).float().mean())
    return density


def check_nm_model(model: nn.Module, layers: Iterable[str], n: int, m: int) -> dict[str, bool]:
    """For each named layer, whether its effective weight satisfies the N:M pattern."""
    mods = dict(model.named_modules())
    return {name: satisfies_nm(mods[name].weight, n, m) for name in layers}


def semi_structured_supported(device: torch.device | str | None = None) -> bool:
    """True on a CUDA device of compute capability 8.0+ (2:4 sparse tensor cores)."""
    if not torch.cuda.is_available():
        return False
    dev = torch.device(device) if device is not None else torch.device("cuda")
    if dev.type != "cuda":
        return False
    return torch.cuda.get_device_capability(dev) >= (8, 0)


def to_semi_structured(
    model: nn.Module, layers: Sequence[str] | None = None, *, dtype: torch.dtype = torch.float16,
    check: bool = True, rtol: float = 1e-2, atol: float = 1e-2,
) -> list[str]:
    """Convert eligible 2:4 Linear layers to ``torch.sparse.to_sparse_semi_structured`` (inference).

    The model is moved to CUDA in ``dtype``. Each converted layer is checked against the dense
    masked result on a random batch. Without a CUDA sm80+ device nothing happens.

    Returns:
        Names of the converted layers (empty when unsupported).
    """
    if not semi_structured_supported():
        logger.info("2:4 semi-structured kernels need CUDA with compute capability 8.0+; skipped")
        return []
    from torch.sparse import to_sparse_semi_structured

    model.to(device="cuda", dtype=dtype).eval()
    converted: list[str] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or (layers is not None and name not in layers):
            continue
        w = mod.weight.detach()
        if not satisfies_nm(w, 2, 4):
            if layers is not None:
                raise InputError(f"layer {name!r} is not 2:4 sparse: export it with export_nm first")
            continue
        x = torch.randn(64, w.shape[1], device="cuda", dtype=dtype)
        dense = nn.functional.linear(x, w, mod.bias)
        try:
            sparse_w = to_sparse_semi_structured(w)
            out = nn.functional.linear(x, sparse_w, mod.bias)
        except (RuntimeError, ValueError) as exc:
            logger.info("2:4 kernel declined %s %s: %s", name, tuple(w.shape), exc)
            continue
        if check and not torch.allclose(out, dense, rtol=rtol, atol=atol):
            raise RuntimeError(f"semi-structured {name} differs from the dense masked result")
        mod.weight = nn.Parameter(sparse_w, requires_grad=False)
        converted.append(name)
    return converted


class NMHook(TrainHook):
    """Shared part of the N:M recipes: pattern, layer selection, export and report.

    Args:
        pattern: ``"N:M"``, e.g. ``"2:4"``.
        skip: fnmatch patterns of module names to keep dense.
        skip_first: Keep the first Linear/Conv2d (the stem) dense.
        skip_last: Keep the last Linear/Conv2d (the classifier) dense.
        strict: Raise for a layer whose input dim is not divisible by M instead of skipping it.
    """

    name = "nm"

    def __init__(
        self, pattern: str = "2:4", *, skip: Sequence[str] = (), skip_first: bool = True,
        skip_last: bool = True, strict: bool = False,
    ) -> None:
        self.pattern = str(pattern)
        self.n, self.m = parse_pattern(pattern)
        self.skip = list(skip)
        self.skip_first, self.skip_last, self.strict = skip_first, skip_last, strict
        self.layers: dict[str, nn.Module] = {}
        self.density: dict[str, float] = {}

    def _select(self, model: nn.Module) -> None:
        self.layers = eligible_layers(
            model, self.m, skip=self.skip, skip_first=self.skip_first,
            skip_last=self.skip_last, strict=self.strict,
        )
        if not self.layers:
            logger.warning("%s: no layer is eligible for %s sparsity", self.name, self.pattern)

    def _install(self, decay: float, active: bool) -> None:
        for mod in self.layers.values():
            if not _parametrizations(mod):
                parametrize.register_parametrization(
                    mod, "weight", NMParametrization(self.n, self.m, decay, active)
                )

    def _set_active(self, active: bool) -> None:
        for mod in self.layers.values():
            for p in _parametrizations(mod):
                p.active = active

    def masked_params(self) -> list[nn.Parameter]:
        return [raw_weight(mod) for mod in self.layers.values()]  # type: ignore[misc]

    def on_train_end(self, model: nn.Module) -> nn.Module:
        self.density = export_nm(model, self.layers, self.n, self.m)
        return model

    def summary(self) -> dict[str, Any]:
        total = sum(mod.weight.numel() for mod in self.layers.values())
        return {
            "recipe": self.name,
            "pattern": self.pattern,
            "layers": list(self.layers),
            "masked_weights": int(total),
            "skip": self.skip, "skip_first": self.skip_first, "skip_last": self.skip_last,
            "density": self.density,
        }


@SPARSITY.register("srste")
class SRSTEHook(NMHook):
    """SR-STE from the first step: sparse forward, straight-through gradient plus pruned decay.

    Args:
        lambda_w: Decay on pruned weights in the backward pass (2e-4 in the paper).
        **kwargs: :class:`NMHook` options.
    """

    name = "srste"

    def __init__(self, pattern: str = "2:4", *, lambda_w: float = 2e-4, **kwargs: Any) -> None:
        super().__init__(pattern, **kwargs)
        self.lambda_w = float(lambda_w)

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self._select(model)
        self._install(self.lambda_w, active=True)

    def masks_final(self) -> bool:
        """Always: every forward already uses the N:M mask of the current weights, which is
        exactly what :func:`export_nm` bakes in, so each epoch's validated model is the export."""
        return True

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "lambda_w": self.lambda_w}


@SPARSITY.register("asp")
class ASPHook(NMHook):
    """ASP: dense training, one-shot magnitude pruning, masked fine-tuning.

    Args:
        prune_epoch: Dense epochs before pruning (None: half of ``cfg.epochs``; 0: prune at the
            start, i.e. prune the pretrained weights and fine-tune).
        **kwargs: :class:`NMHook` options.
    """

    name = "asp"

    def __init__(self, pattern: str = "2:4", *, prune_epoch: int | None = None, **kwargs: Any) -> None:
        super().__init__(pattern, **kwargs)
        if prune_epoch is not None and int(prune_epoch) < 0:
            raise InputError(f"prune_epoch={prune_epoch!r} must be >= 0 (0 prunes at the start)")
        self.prune_epoch = prune_epoch
        self.masks: dict[str, torch.Tensor] = {}
        self.pruned_after_epoch: int | None = None

    def make_optimizer(self, params: Iterable[nn.Parameter], cfg: Any) -> None:
        if self.prune_epoch is None:
            self.prune_epoch = int(getattr(cfg, "epochs", 0)) // 2
        return None

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self._select(model)
        if not self.prune_epoch:
            self.prune(-1)

    @torch.no_grad()
    def prune(self, epoch: int) -> None:
        """Compute the magnitude masks once and zero the pruned weights."""
        for name, mod in self.layers.items():
            self.masks[name] = nm_mask(mod.weight, self.n, self.m)
            mod.weight.mul_(self.masks[name])
        self.pruned_after_epoch = epoch
        logger.info("ASP: pruned %d layers to %s after epoch %d", len(self.layers), self.pattern, epoch)

    def after_backward(self, model: nn.Module, step: int) -> None:
        for name, mask in self.masks.items():
            grad = self.layers[name].weight.grad
            if grad is not None:
                grad.mul_(mask)

    @torch.no_grad()
    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        for name, mask in self.masks.items():
            self.layers[name].weight.mul_(mask)

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        if not self.masks and self.prune_epoch is not None and epoch + 1 >= self.prune_epoch:
            self.prune(epoch)

    def masks_final(self) -> bool:
        """True once pruned: the mask is fixed from then on (no eligible layer: always True)."""
        return bool(self.masks) or not self.layers

    def epoch_record(self) -> dict[str, Any]:
        return {"asp_pruned": bool(self.masks)}

    def state_dict(self) -> dict[str, Any]:
        return {"masks": dict(self.masks), "pruned_after_epoch": self.pruned_after_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = {k: v.bool() for k, v in state.get("masks", {}).items()}
        self.pruned_after_epoch = state.get("pruned_after_epoch")

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "prune_epoch": self.prune_epoch,
                "pruned_after_epoch": self.pruned_after_epoch}


@SPARSITY.register("step")
class STEPHook(NMHook):
    """STEP: dense Adam until AutoSwitch, then frozen-variance Adam with SR-STE mask learning.

    Args:
        lambda_w: SR-STE decay in phase 2.
        betas, eps: Adam's.
        window, threshold, t_min, t_max, clamp, normalise: :class:`StepAdam` AutoSwitch options
            and the phase-2 update clamp (``clamp=None``: STEP's exact, unclamped update).
        **kwargs: :class:`NMHook` options.
    """

    name = "step"

    def __init__(
        self, pattern: str = "2:4", *, lambda_w: float = 2e-4, betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8, window: int = 20, threshold: float = 0.2, t_min: int = 20,
        t_max: int = 2000, clamp: float | None = 1.0, normalise: str = "peak", **kwargs: Any,
    ) -> None:
        super().__init__(pattern, **kwargs)
        self.lambda_w = float(lambda_w)
        self.adam_options = dict(betas=tuple(betas), eps=eps, window=window, threshold=threshold,
                                 t_min=t_min, t_max=t_max, clamp=clamp, normalise=normalise)
        self.optimizer: StepAdam | None = None

    def make_optimizer(self, params: Iterable[nn.Parameter], cfg: Any) -> StepAdam:
        if getattr(cfg, "optimizer", "adam") not in ("adam", "adamw"):
            logger.warning("STEP uses its own Adam variant; optimizer=%r is ignored", cfg.optimizer)
        self.optimizer = StepAdam(params, lr=float(getattr(cfg, "lr", 1e-3)),
                                  weight_decay=float(getattr(cfg, "weight_decay", 0.0)),
                                  **self.adam_options)
        return self.optimizer

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        if not isinstance(optimizer, StepAdam):
            raise InputError("sparsity recipe 'step' needs its StepAdam optimizer (from make_optimizer)")
        self.optimizer = optimizer
        self._select(model)
        self._install(self.lambda_w, active=optimizer.phase == 2)
        optimizer.set_masked_params(self.masked_params())

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        if isinstance(optimizer, StepAdam) and optimizer.phase == 2:
            self._set_active(True)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.optimizer is not None:
            self._set_active(self.optimizer.phase == 2)

    def masks_final(self) -> bool:
        """True after AutoSwitch: from then on every forward uses the learned N:M mask (SR-STE
        style, as in SR-STE the mask follows the weights), which is what the export bakes in."""
        return (self.optimizer is not None and self.optimizer.phase == 2) or not self.layers

    def epoch_record(self) -> dict[str, Any]:
        opt = self.optimizer
        return {"step_phase": opt.phase if opt else 1,
                "step_switch_step": opt.switch_step if opt and opt.switch_step is not None else -1}

    def summary(self) -> dict[str, Any]:
        opt = self.optimizer
        return {
            **super().summary(), "lambda_w": self.lambda_w, **self.adam_options,
            "switch_step": opt.switch_step if opt else None,
            "switch_reason": opt.switch_reason if opt else None,
            "steps": opt.t if opt else 0,
        }

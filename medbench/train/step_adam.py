"""The Adam variant of STEP (Lu et al. 2023): dense Adam, AutoSwitch, then a frozen second moment.

Phase 1 is plain Adam (L2 weight decay). After each phase-1 step the optimizer records the
relative change of the bias-corrected second moment over the *masked* parameters,
``z_t = sum |v_hat_t - v_hat_{t-1}| / sum v_hat_t``; AutoSwitch fires at the first step
``t >= t_min`` where the mean of the last ``window`` values of ``z`` is below ``threshold``, and
at ``t_max`` at the latest. From then on (phase 2) ``v_hat`` is frozen as a preconditioner: the
first moment keeps moving, the update is ``lr * m_hat / (sqrt(v_frozen) + eps)``, clamped
elementwise to ``[-clamp * lr, clamp * lr]`` so that a gradient much larger than the frozen
variance cannot blow a weight up. The relative form of ``z`` makes ``threshold`` scale-free: it
falls like ``1/t`` while ``v_hat`` is still averaging its first gradients and levels off near
``(1 - beta2)`` once ``v`` tracks a stationary gradient distribution.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from medbench.errors import InputError

logger = logging.getLogger(__name__)


class StepAdam(torch.optim.Optimizer):
    """Adam with STEP's AutoSwitch and frozen-variance phase.

    Args:
        params: Parameters (or groups).
        lr: Learning rate.
        betas: Adam's (beta1, beta2).
        eps: Adam's epsilon.
        weight_decay: L2 penalty added to the gradient.
        window: Number of recent ``z_t`` values averaged by AutoSwitch.
        threshold: AutoSwitch fires when the window mean of ``z_t`` drops below this.
        t_min: No switch before this step.
        t_max: Switch at this step at the latest.
        clamp: Phase-2 bound on ``|m_hat / (sqrt(v_frozen) + eps)|`` (None: no clamp).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        window: int = 20,
        threshold: float = 0.02,
        t_min: int = 20,
        t_max: int = 2000,
        clamp: float | None = 1.0,
    ) -> None:
        if not 0 < int(window):
            raise InputError(f"window={window!r} must be a positive number of steps")
        if not 0 <= int(t_min) <= int(t_max):
            raise InputError(f"need 0 <= t_min <= t_max, got t_min={t_min!r}, t_max={t_max!r}")
        if lr <= 0:
            raise InputError(f"lr={lr!r} must be positive")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.window = int(window)
        self.threshold = float(threshold)
        self.t_min, self.t_max = int(t_min), int(t_max)
        self.clamp = clamp
        self.t = 0
        self.phase = 1
        self.switch_step: int | None = None
        self.switch_reason: str | None = None
        self.metrics: list[float] = []
        self._recent: deque[float] = deque(maxlen=self.window)
        self._masked: set[int] | None = None

    def set_masked_params(self, params: Iterable[nn.Parameter]) -> None:
        """The parameters whose variance change AutoSwitch watches (default: all)."""
        self._masked = {id(p) for p in params}

    def _watched(self, p: torch.Tensor) -> bool:
        return self._masked is None or id(p) in self._masked

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.t += 1
        t = self.t
        change: list[torch.Tensor] = []
        level: list[torch.Tensor] = []
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd:
                    g = g.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                m_hat = m / (1 - b1**t)
                if self.phase == 1:
                    v_prev_hat = v / (1 - b2 ** (t - 1)) if t > 1 else None
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    v_hat = v / (1 - b2**t)
                    if v_prev_hat is not None and self._watched(p):
                        change.append((v_hat - v_prev_hat).abs().sum())
                        level.append(v_hat.sum())
                    p.addcdiv_(m_hat, v_hat.sqrt().add_(eps), value=-lr)
                else:
                    if "v_frozen" not in state:  # a parameter first seen after the switch
                        state["v_frozen"] = g * g
                    upd = m_hat / state["v_frozen"].sqrt().add_(eps)
                    if self.clamp is not None:
                        upd.clamp_(-self.clamp, self.clamp)
                    p.add_(upd, alpha=-lr)
        if self.phase == 1:
            self._autoswitch(change, level)
        return loss

    def _autoswitch(self, change: list[torch.Tensor], level: list[torch.Tensor]) -> None:
        if change:
            z = float(torch.stack(change).sum() / torch.stack(level).sum().clamp_min(1e-30))
            self.metrics.append(z)
            self._recent.append(z)
        if self.t >= self.t_max:
            self.switch("t_max")
        elif (
            self.t >= self.t_min
            and len(self._recent) == self.window
            and sum(self._recent) / self.window < self.threshold
        ):
            self.switch("autoswitch")

    def switch(self, reason: str = "manual") -> None:
        """Freeze the bias-corrected second moment of every parameter and enter phase 2."""
        if self.phase == 2:
            return
        for group in self.param_groups:
            b2 = group["betas"][1]
            for p in group["params"]:
                state = self.state.get(p)
                if state and "exp_avg_sq" in state:
                    state["v_frozen"] = state["exp_avg_sq"] / (1 - b2**self.t)
        self.phase = 2
        self.switch_step = self.t
        self.switch_reason = reason
        window_mean = sum(self._recent) / len(self._recent) if self._recent else float("nan")
        logger.info("STEP: switched to the frozen-variance phase at step %d (%s, window mean %.3g)",
                    self.t, reason, window_mean)

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["step_adam"] = {
            "t": self.t, "phase": self.phase, "switch_step": self.switch_step,
            "switch_reason": self.switch_reason, "metrics": list(self.metrics),
            "recent": list(self._recent),
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sd = dict(state_dict)
        extra = sd.pop("step_adam", None)
        super().load_state_dict(sd)
        if extra:
            self.t = int(extra["t"])
            self.phase = int(extra["phase"])
            self.switch_step = extra["switch_step"]
            self.switch_reason = extra["switch_reason"]
            self.metrics = [float(v) for v in extra["metrics"]]
            self._recent = deque((float(v) for v in extra["recent"]), maxlen=self.window)

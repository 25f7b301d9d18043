"""The Adam variant of STEP (Lu et al. 2023): dense Adam, AutoSwitch, then a frozen second moment.

Phase 1 is plain Adam (L2 weight decay). AutoSwitch watches how much Adam's second moment still
moves: after each phase-1 step it records, over the *masked* parameters,
``z_t = mean |v_t - v_{t-1}|`` on the **un-bias-corrected** EMA ``v_t = b2 v_{t-1} + (1 - b2) g_t^2``
(``v_0 = 0``), i.e. ``(1 - b2) mean |g_t^2 - v_{t-1}|``, and the sliding-window mean ``zbar_t`` of
the last ``window`` values. With ``normalise="peak"`` (default) the tested statistic is
``zbar_t / max_{s <= t} zbar_s``: how far the per-step variance change has fallen from its largest
level in this run, which makes ``threshold`` free of the gradient scale (a fraction in (0, 1));
with ``normalise="none"`` it is ``zbar_t`` itself against an absolute threshold, as in the paper's
algorithm. AutoSwitch fires at the first step ``t >= t_min`` with a full window whose statistic is
below ``threshold``, and at ``t_max`` at the latest.

Why not the bias-corrected ``v_hat``: early on ``v_hat_t`` is a plain running mean of the first
``t`` squared gradients, so its relative change falls like ``1/t`` whatever the data or the
learning rate, and a threshold on it is a fixed warm-up (it fired at step 65-85 for lr 2e-3 and
2e-4, batch 32 and 128). The un-corrected change instead tracks the gradient second moment and
its drift: it is large while training moves the weights into a new regime and decays once the
gradient distribution is stationary and shrinking. So the switch comes later for a smaller
learning rate (the weights, and hence the gradient statistics, move about ``lr`` per step, so the
same drift takes proportionally more steps) and later for noisier gradients (small batches keep
``|g_t^2 - v_{t-1}|`` high relative to its peak).

Phase 2 freezes the bias-corrected ``v_hat`` as a preconditioner: the first moment keeps moving and
the update is ``lr * m_hat / (sqrt(v_frozen) + eps)``, as in STEP. ``clamp`` (default 1.0) bounds that
update elementwise to ``[-clamp * lr, clamp * lr]``. The clamp is not in the STEP paper; pass
``clamp=None`` for STEP's exact update. It is kept on by default because it restores a guarantee
that plain Adam has and the frozen preconditioner loses: Adam's step satisfies ``|update| <= lr``
whenever ``1 - b1 <= sqrt(1 - b2)`` (Kingma & Ba 2015, sec. 2.1; true for the defaults 0.9/0.999),
because ``v_hat`` grows with the gradient that ``m_hat`` sees. With ``v`` frozen, a coordinate whose
gradient was (near) zero during phase 1 -- a dead ReLU unit, or a weight the SR-STE mask only starts
using in phase 2 -- gets ``m_hat / (0 + eps)``: on a small ReLU MLP switched at step 12 the
unclamped update turned every weight NaN within an epoch, while the clamped run trained normally.
The clamp never binds for a coordinate whose gradients stay within the frozen variance's scale.
"""

from __future__ import annotations

import logging
import math
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
        threshold: AutoSwitch fires when the window statistic drops below this (a fraction of
            the peak window mean with ``normalise="peak"``, an absolute level with "none").
        t_min: No switch before this step.
        t_max: Switch at this step at the latest.
        clamp: Phase-2 bound on ``|m_hat / (sqrt(v_frozen) + eps)|`` (Adam's own ``|update| <= lr``
            bound; not in the paper, see the module docstring); None: STEP's exact update.
        normalise: "peak" (window mean over its running maximum) or "none" (absolute).
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
        threshold: float = 0.2,
        t_min: int = 20,
        t_max: int = 2000,
        clamp: float | None = 1.0,
        normalise: str = "peak",
    ) -> None:
        if not 0 < int(window):
            raise InputError(f"window={window!r} must be a positive number of steps")
        if not 0 <= int(t_min) <= int(t_max):
            raise InputError(f"need 0 <= t_min <= t_max, got t_min={t_min!r}, t_max={t_max!r}")
        if lr <= 0:
            raise InputError(f"lr={lr!r} must be positive")
        if normalise not in ("peak", "none"):
            raise InputError(f"normalise={normalise!r}: use 'peak' or 'none'")
        if normalise == "peak" and not 0 < float(threshold) < 1:
            raise InputError(f"threshold={threshold!r} must lie in (0, 1) with normalise='peak'")
        if clamp is not None and float(clamp) <= 0:
            raise InputError(f"clamp={clamp!r} must be positive (or None for no clamp)")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.window = int(window)
        self.threshold = float(threshold)
        self.t_min, self.t_max = int(t_min), int(t_max)
        self.clamp = clamp
        self.normalise = normalise
        self.t = 0
        self.phase = 1
        self.switch_step: int | None = None
        self.switch_reason: str | None = None
        self.metrics: list[float] = []  # z_t for t = 1, 2, ...
        self.statistic: list[float] = []  # the tested window statistic, one per full window
        self.peak = 0.0
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
        count = 0
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
                    if self._watched(p):  # v_t - v_{t-1} = (1 - b2) (g^2 - v_{t-1}), un-corrected
                        change.append((g * g - v).abs().sum() * (1 - b2))
                        count += v.numel()
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    v_hat = v / (1 - b2**t)
                    p.addcdiv_(m_hat, v_hat.sqrt().add_(eps), value=-lr)
                else:
                    if "v_frozen" not in state:  # a parameter first seen after the switch
                        state["v_frozen"] = g * g
                    upd = m_hat / state["v_frozen"].sqrt().add_(eps)
                    if self.clamp is not None:
                        upd.clamp_(-self.clamp, self.clamp)
                    p.add_(upd, alpha=-lr)
        if self.phase == 1:
            self._autoswitch(change, count)
        return loss

    def _autoswitch(self, change: list[torch.Tensor], count: int) -> None:
        stat = math.nan
        if change:
            z = float(torch.stack(change).sum()) / max(count, 1)
            self.metrics.append(z)
            self._recent.append(z)
            if len(self._recent) == self.window:
                mean = sum(self._recent) / self.window
                self.peak = max(self.peak, mean)
                if self.normalise == "none":
                    stat = mean
                else:
                    stat = mean / self.peak if self.peak > 0 else 0.0
                self.statistic.append(stat)
        if self.t >= self.t_max:
            self.switch("t_max")
        elif self.t >= self.t_min and stat < self.threshold:  # NaN (window not full) compares False
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
        stat = self.statistic[-1] if self.statistic else float("nan")
        logger.info("STEP: switched to the frozen-variance phase at step %d (%s, AutoSwitch statistic "
                    "%.3g, threshold %.3g, normalise=%s)", self.t, reason, stat, self.threshold, self.normalise)

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["step_adam"] = {
            "t": self.t, "phase": self.phase, "switch_step": self.switch_step,
            "switch_reason": self.switch_reason, "metrics": list(self.metrics),
            "recent": list(self._recent), "statistic": list(self.statistic), "peak": self.peak,
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
            self.statistic = [float(v) for v in extra.get("statistic", [])]
            self.peak = float(extra.get("peak", 0.0))

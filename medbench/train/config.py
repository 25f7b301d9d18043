"""The engine's configuration: one dataclass, validated, round-trips through dicts and YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from medbench.errors import InputError
from medbench.registry import did_you_mean

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "step", "constant")
INTERVALS = ("epoch", "step")
AMP_MODES = ("auto", "bf16", "fp16", "none")

#: Fields that change how a run executes, not what it computes (epochs and patience do change it).
RUNTIME_FIELDS = frozenset(
    {"device", "num_workers", "progress", "checkpoint_every", "eval_batch_size", "compile"}
)


@dataclass
class TrainConfig:
    """Everything ``fit`` needs besides the model and the data.

    Attributes:
        epochs: Maximum number of epochs.
        batch_size: Training batch size (the global batch under torchrun, split over the ranks).
        lr: Peak learning rate.
        optimizer: "adamw", "adam" or "sgd" (momentum ``momentum``, Nesterov off).
        weight_decay: Weight decay (decoupled for AdamW, L2 for Adam/SGD).
        momentum: SGD momentum.
        schedule: "cosine" (to 0 at the end of ``epochs``), "step" (x ``gamma`` every ``step_size``
            intervals) or "constant".
        schedule_interval: "epoch" (scheduler steps after each epoch) or "step" (after each
            optimizer step; cosine then spans ``epochs * steps_per_epoch``).
        step_size: Intervals between decays of the "step" schedule.
        gamma: Decay factor of the "step" schedule.
        patience: Stop after this many epochs without a lower validation loss; None or 0 = never.
        min_delta: Smallest decrease of validation loss that counts as an improvement.
        seed: Seeds the run (global torch RNG for dropout/init inside ``fit``, and the ordering).
        device: "auto", "cpu", "cuda", "cuda:N".
        amp: Mixed precision on CUDA: "auto" (bf16 when supported), "bf16", "fp16", "none".
            No-op on CPU.
        channels_last: Use channels-last memory format on CUDA (no-op on CPU).
        compile: ``torch.compile`` the training forward on CUDA (ignored on CPU).
        linear_probe: Train only the classifier; the backbone is frozen with BatchNorm in eval mode.
        grad_clip: Clip the global gradient norm to this value (None = off).
        label_smoothing: Cross-entropy label smoothing (multi-output models).
        order: Name in ``medbench.train.hooks.ORDERINGS`` ("rr", "so", "grab", "pair").
        order_options: Extra keyword arguments of the ordering.
        sparsity: N:M pattern such as "2:4"; None = dense.
        sparsity_recipe: Name in ``medbench.train.hooks.SPARSITY`` ("step", "srste", "asp").
        sparsity_options: Extra keyword arguments of the sparsity recipe.
        num_workers: DataLoader worker processes.
        eval_batch_size: Batch size of validation/prediction (default: 2 x batch_size).
        checkpoint_every: Also checkpoint every this many optimizer steps (0 = epoch ends only).
        deterministic: Ask cuDNN for deterministic kernels (CPU runs are deterministic anyway).
        progress: Show a progress bar.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    schedule_interval: str = "epoch"
    step_size: int = 10
    gamma: float = 0.1
    patience: int | None = 5
    min_delta: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False
    linear_probe: bool = False
    grad_clip: float | None = None
    label_smoothing: float = 0.0
    order: str = "rr"
    order_options: dict[str, Any] = field(default_factory=dict)
    sparsity: str | None = None
    sparsity_recipe: str = "step"
    sparsity_options: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0
    eval_batch_size: int | None = None
    checkpoint_every: int = 0
    deterministic: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first bad field and its allowed values."""
        for name, value, choices in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("schedule_interval", self.schedule_interval, INTERVALS),
            ("amp", self.amp, AMP_MODES),
        ):
            if value not in choices:
                raise InputError(f"TrainConfig.{name}={value!r}: {did_you_mean(str(value), choices)}")
        for name in ("epochs", "batch_size", "step_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise InputError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise InputError(f"TrainConfig.grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.checkpoint_every < 0 or self.num_workers < 0:
            raise InputError("TrainConfig.checkpoint_every and num_workers must be >= 0")
        if self.sparsity is not None:
            from medbench.train.nm_mask import parse_pattern  # the parser the sparsity hooks use

            try:
                parse_pattern(str(self.sparsity))
            except InputError as exc:
                raise InputError(
                    f"TrainConfig.sparsity={self.sparsity!r}: use an N:M pattern such as '2:4' ({exc})"
                ) from None

    @property
    def early_stopping(self) -> bool:
        return bool(self.patience)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (YAML/JSON safe)."""
        return dataclasses.asdict(self)

    def settings(self) -> dict[str, Any]:
        """The fields that determine the results (``to_dict`` without :data:`RUNTIME_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise :class:`InputError` with close matches."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            k = unknown[0]
            raise InputError(f"unknown TrainConfig field {k!r}: {did_you_mean(k, names)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

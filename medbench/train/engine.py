"""The fine-tuning engine: one loop for binary and multi-class classifiers, resumable from its folder.

``fit(model, train_ds, val_ds, cfg, out_dir)`` writes into ``out_dir``::

    config.yaml, settings.yaml, train.log, units/fit.json
                         the run folder of :func:`medbench.runs.open_run` (workflow "train"): the
                         settings, what was resolved at run time, the log, the finished fit
    checkpoints/last.pt  everything needed to resume (written atomically at each epoch end and
                         every ``cfg.checkpoint_every`` optimizer steps)
    checkpoints/best.pt  model weights of the lowest validation loss (the last epoch without val),
                         among the epochs whose masks are final (``TrainHook.masks_final``)
    history.csv          one row per epoch: epoch (0-based), train_loss, val_loss, val_auc/val_acc, lr, ...
    predictions.parquet  (+ .csv) predictions of the best model on the val (and test) sets
    summary.json, train.log

Calling ``fit`` again with the same folder resumes from ``last.pt`` (a finished run only reloads
its best weights and predictions). With the same seed on CPU the resumed run ends bit-identical
to an uninterrupted one. The run layer decides whether the folder may be resumed: called alone,
``fit`` opens ``out_dir`` itself with the settings ``{"train": cfg.settings()}`` (other settings are
refused, every change listed; ``restart=True`` starts over); a workflow that already opened the
folder (``medbench train``) passes its :class:`~medbench.runs.Run` instead. ``last.pt`` carries the
hash of the settings it was computed with, so a checkpoint from other settings is never resumed.

Extension points (see :mod:`medbench.train.hooks`), in call order:

1. ``hook.make_optimizer(params, cfg)`` for each hook (the first non-None optimizer wins),
   then the schedule is built on that optimizer;
2. ``hook.on_train_start(model, optimizer)``; **then** the checkpoint (if any) is loaded into the
   model, optimizer, scheduler, sampler (``load_state_dict``) and hooks (``load_state_dict``);
3. per epoch: ``sampler.set_epoch(epoch)`` exactly once per epoch, also across a resume (a run
   resumed mid-epoch restores the sampler state saved during that epoch and does not call it again;
   ``iter(sampler)`` must then yield the same order, the engine skips the batches already done);
4. per step: forward, backward (fp16 AMP: gradients unscaled right after), ``hook.after_backward(model, step)``,
   ``sampler.observe(model, loss_fn, inputs, targets, indices)`` (parameters still as in the forward),
   gradient clipping, optimizer step, ``hook.after_step(model, optimizer, step)``,
   ``hook.on_batch_end(step, loss, logits, targets)``, per-step schedule;
   ``step`` is the 0-based index of the optimizer step in the run;
5. end of epoch: ``sampler.end_epoch()``, ``hook.on_epoch_end(model, epoch)``, per-epoch schedule,
   validation, checkpoints;
6. end: best weights loaded, ``hook.on_train_end(model)`` (may return a new model), predictions.

Distributed (``torchrun --nproc_per_node N``; see docs/scaling.md): :func:`medbench.train.dist.init_from_env`
starts the process group, the model trains wrapped in ``DistributedDataParallel`` and
``cfg.batch_size`` stays the **global** batch (``batch_size / N`` per rank). "rr"/"so" orders are
split per global batch over the ranks (:class:`~medbench.train.dist.RankShardSampler`), "cdgrab" is
per-rank by design, "grab"/"pair" are refused. Validation and predictions are computed on shards
and gathered (de-duplicated by dataset index), so every rank sees the same metrics. Only rank 0
writes files; the others wait at barriers. Every rank resumes from the same ``last.pt``.

GPU data path: pinned host memory and non-blocking copies, AMP (``cfg.amp``), channels-last and
optional ``torch.compile`` of the training forward (``cfg.compile``), all CUDA-only (no-ops on CPU).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from medbench.errors import InputError, MedbenchError
from medbench.runs import Run, settings_hash
from medbench.train import dist
from medbench.train.batching import IndexedDataset, collate_train, first_image
from medbench.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from medbench.train.config import TrainConfig
from medbench.train.hooks import ORDERINGS, SPARSITY, TrainHook, load_builtin_entries
from medbench.train.metrics_lite import epoch_metrics
from medbench.train.optim import (
    build_optimizer,
    build_scheduler,
    current_lr,
    eval_mode,
    frozen_backbone,
    set_train_mode,
)
from medbench.train.predict import (
    PREDICTIONS,
    TaskLoss,
    autocast_ctx,
    infer,
    predict,
    predictions_frame,
    save_predictions,
)
from medbench.train.run_setup import FIT_OUTPUTS, Progress, last_state, open_fit_run, restore_last
from medbench.train.runfiles import write_history, write_summary
from medbench.utils.rng import torch_generator

__all__ = ["FIT_OUTPUTS", "FitResult", "TrainConfig", "TrainingDivergedError", "fit", "predict"]

logger = logging.getLogger(__name__)


class TrainingDivergedError(MedbenchError):
    """The training loss became NaN/inf."""


@dataclass
class FitResult:
    """What :func:`fit` returns: the model with its best weights loaded, and the run's records."""

    model: nn.Module
    best_path: Path | None
    history: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    predictions: pd.DataFrame | None = None
    out_dir: Path | None = None


def shown_row(row: dict[str, Any]) -> dict[str, Any]:
    """A history row as shown everywhere (log, ``history.csv``, trackers, reports): epochs are
    numbered from 1, as in the progress bar ("epoch 1/5"). Internally (``last.pt``) they count
    from 0."""
    return {**row, "epoch": int(row["epoch"]) + 1}


class _Trainer:
    """One ``fit`` call: set-up, resume, the epoch loop and the end of the run."""

    on_epoch: Callable[[dict[str, Any]], None] | None = None  # set by ``fit``: each history row

    def __init__(
        self, model: nn.Module, train_ds: Dataset, val_ds: Dataset | None, cfg: TrainConfig,
        out_dir: Path, hooks: Sequence[TrainHook], head: nn.Module | None,
        run_info: dict[str, Any] | None = None, run: Run | None = None,
    ) -> None:
        self.cfg, self.out, self.train_ds, self.val_ds, self.head = cfg, out_dir, train_ds, val_ds, head
        self.run_info = dict(run_info or {})
        self.folder = run  # the open run folder (main rank only)
        self.settings_hash = settings_hash(run.settings) if run is not None else None
        self.ckpt_dir = out_dir / "checkpoints"
        self.device = dist.init_from_env(cfg.device)
        self.world = dist.world_size()
        self.dtype = dist.amp_dtype(cfg.amp, self.device)
        self.channels_last = cfg.channels_last and self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = cfg.deterministic
            torch.backends.cudnn.benchmark = not cfg.deterministic
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.n_outputs = self._probe_outputs()
        self.loss_fn = TaskLoss(self.n_outputs, cfg.label_smoothing)

        load_builtin_entries()
        self.hooks: list[TrainHook] = []
        if cfg.sparsity:
            self.hooks.append(SPARSITY.create(cfg.sparsity_recipe, pattern=cfg.sparsity, **cfg.sparsity_options))
        self.hooks.extend(hooks)
        self.sampler = self._make_sampler()
        self.local_batch = cfg.batch_size // self.world
        self.steps_per_epoch = math.ceil(len(self.sampler) / self.local_batch)
        self.train_model = self._wrap_model(model)

        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise InputError("the model has no trainable parameters: unfreeze some or drop --linear-probe")
        optimizer = None
        for hook in self.hooks:
            optimizer = hook.make_optimizer(params, cfg)
            if optimizer is not None:
                logger.info("optimizer from hook %s: %s", hook.name, type(optimizer).__name__)
                break
        self.optimizer = optimizer or build_optimizer(params, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.p = Progress()
        self._ran_nothing = False  # set by start() when the folder holds a finished run

    # ----------------------------------------------------------------- set-up and resume
    def _make_sampler(self) -> Any:
        """The ordering of ``cfg.order``; under DDP a per-rank view of it (or a clear refusal)."""
        cfg = self.cfg
        if self.world > 1:
            if cfg.order in ("grab", "pair"):
                raise InputError(
                    f"order {cfg.order!r} balances one process's gradient stream and cannot run under "
                    f"torchrun with {self.world} processes: use --order cdgrab (CD-GraB, the distributed "
                    "variant) or rr/so"
                )
            if cfg.batch_size % self.world:
                raise InputError(
                    f"batch_size={cfg.batch_size} is the global batch and must be a multiple of the "
                    f"{self.world} processes: use e.g. --batch-size {cfg.batch_size - cfg.batch_size % self.world or self.world}"
                )
        sampler = ORDERINGS.create(cfg.order, dataset_size=len(self.train_ds), seed=cfg.seed, **cfg.order_options)
        if self.world > 1 and cfg.order != "cdgrab":
            sampler = dist.RankShardSampler(sampler, cfg.batch_size, dist.rank(), self.world)
        return sampler

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        """The module the training step calls: DDP when distributed, compiled when asked on CUDA."""
        train_model: nn.Module = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            train_model = DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)
        if self.cfg.compile:
            if self.device.type == "cuda":
                train_model = torch.compile(train_model)  # type: ignore[assignment]
            else:
                logger.info("compile=True is ignored on %s (CUDA only)", self.device)
        return train_model

    @torch.no_grad()
    def _probe_outputs(self) -> int:
        x = first_image(self.train_ds)[None].to(self.device)
        with eval_mode(self.model):
            out = self.model(x)
        return 1 if out.ndim == 1 else int(out.shape[-1])

    def start(self) -> None:
        """Call ``on_train_start`` hooks, then resume from ``last.pt`` or seed a fresh run."""
        for hook in self.hooks:
            hook.on_train_start(self.model, self.optimizer)
        last = self.ckpt_dir / LAST
        if last.exists():
            self._resume(load_checkpoint(last))
        else:
            if self.cfg.seed is not None:
                torch.manual_seed(self.cfg.seed)
        self._ran_nothing = self.p.finished
        if self.folder is not None:  # config.yaml: the run's settings and what this process resolved
            self.folder.write_config({**self._resolved(), **({"run": self.run_info} if self.run_info else {})})
        dist.barrier()

    def _resolved(self) -> dict[str, Any]:
        return {
            "device": str(self.device), "amp_dtype": str(self.dtype).replace("torch.", "") if self.dtype else "none",
            "channels_last": self.channels_last, "n_outputs": self.n_outputs,
            "n_train": len(self.train_ds), "n_val": len(self.val_ds) if self.val_ds is not None else 0,
            "steps_per_epoch": self.steps_per_epoch, "optimizer_class": type(self.optimizer).__name__,
            "sampler_class": type(self.sampler).__name__, "hooks": [h.name for h in self.hooks],
            "world_size": self.world, "batch_per_rank": self.local_batch,
            "compile": bool(self.cfg.compile and self.device.type == "cuda"),
        }

    def _resume(self, state: dict[str, Any]) -> None:
        self.p = restore_last(
            state, out=self.out, settings_hash=self.settings_hash, model=self.model, optimizer=self.optimizer,
            scheduler=self.scheduler, scaler=self.scaler, sampler=self.sampler, hooks=self.hooks, world=self.world,
        )

    def _save_last(self) -> None:
        sampler_state = self.sampler.state_dict() if hasattr(self.sampler, "state_dict") else None
        ranks = dist.all_gather_object(sampler_state) if self.world > 1 else None  # collective: all ranks
        loss_total = dist.all_reduce_sum([self.p.loss_sum, float(self.p.loss_count)])
        if dist.is_main():
            save_checkpoint(self.ckpt_dir / LAST, last_state(
                cfg=self.cfg, settings_hash=self.settings_hash, model=self.model, optimizer=self.optimizer,
                scheduler=self.scheduler, scaler=self.scaler, sampler_state=sampler_state, ranks=ranks,
                hooks=self.hooks, progress=self.p, loss_total=loss_total,
            ))
        dist.barrier()

    # ----------------------------------------------------------------- the loop
    def run(self) -> None:
        cfg = self.cfg
        while not self.p.finished and not self.p.stopped_early and self.p.epoch < cfg.epochs:
            self._train_epoch()
            self._end_epoch()
        if not self.p.finished:
            self.p.finished = True
            self._save_last()

    def _train_epoch(self) -> None:
        cfg, p = self.cfg, self.p
        if p.batch == 0 and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(p.epoch)
        if hasattr(self.train_ds, "set_epoch"):  # random transforms seed by (seed, uid, epoch)
            self.train_ds.set_epoch(p.epoch)
        order = list(iter(self.sampler))
        batches = [order[i : i + self.local_batch] for i in range(0, len(order), self.local_batch)]
        if len(batches) > 1 and len(batches[-1]) == 1:  # BatchNorm cannot train on one image: join the previous batch
            batches[-2] = batches[-2] + batches.pop()
        loader = DataLoader(
            IndexedDataset(self.train_ds), batch_sampler=batches[p.batch :], num_workers=cfg.num_workers,
            collate_fn=collate_train, pin_memory=self.device.type == "cuda",
            generator=torch_generator(cfg.seed, "loader", p.epoch),  # keeps the global RNG untouched
        )
        if p.batch == 0:
            p.epoch_lr = current_lr(self.optimizer)
        set_train_mode(self.model, self.head)
        observe = getattr(self.sampler, "observe", None)
        per_step_schedule = self.scheduler is not None and cfg.schedule_interval == "step"
        loss_sum = torch.tensor(p.loss_sum, dtype=torch.float64, device=self.device)
        count = p.loss_count
        bar = tqdm(total=len(batches), initial=p.batch, desc=f"epoch {p.epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and dist.is_main()), leave=False, unit="batch")
        t0 = time.perf_counter()
        try:
            for x, y, idx in loader:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                self.optimizer.zero_grad(set_to_none=True)
                with autocast_ctx(self.device, self.dtype):
                    logits = self.train_model(x)
                loss = self.loss_fn(logits, y)
                self.scaler.scale(loss).backward()
                if self.scaler.is_enabled():  # fp16: hooks, observe and clipping see true gradients
                    self.scaler.unscale_(self.optimizer)
                for hook in self.hooks:
                    hook.after_backward(self.model, p.step)
                if observe is not None:
                    observe(self.model, self.loss_fn, x, y, idx)
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                for hook in self.hooks:
                    hook.after_step(self.model, self.optimizer, p.step)
                for hook in self.hooks:
                    hook.on_batch_end(p.step, loss.detach(), logits.detach(), y)
                if per_step_schedule:
                    self.scheduler.step()
                loss_sum += loss.detach().double() * len(y)
                count += len(y)
                p.step += 1
                p.batch += 1
                bar.update(1)
                if p.batch % 25 == 0 and bar.disable is False:
                    bar.set_postfix(loss=f"{loss_sum.item() / count:.4f}")
                if cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0 and p.batch < len(batches):
                    elapsed = time.perf_counter() - t0
                    p.train_time_s += elapsed
                    p.images_seen += count - p.loss_count
                    p.loss_sum, p.loss_count = float(loss_sum.item()), count
                    self._save_last()
                    t0 = time.perf_counter()
        finally:
            bar.close()
        p.train_time_s += time.perf_counter() - t0
        p.images_seen += count - p.loss_count
        p.loss_sum, p.loss_count = float(loss_sum.item()), count

    def _end_epoch(self) -> None:
        cfg, p = self.cfg, self.p
        if hasattr(self.sampler, "end_epoch"):
            self.sampler.end_epoch()
        for hook in self.hooks:
            hook.on_epoch_end(self.model, p.epoch)
        if self.scheduler is not None and cfg.schedule_interval == "epoch":
            self.scheduler.step()
        loss_sum, loss_count = dist.all_reduce_sum([p.loss_sum, float(p.loss_count)])
        train_loss = loss_sum / max(1.0, loss_count)
        if not math.isfinite(train_loss):
            raise TrainingDivergedError(
                f"training loss is {train_loss} at epoch {p.epoch + 1}: lower the learning rate (--lr) "
                "or enable gradient clipping"
            )
        row: dict[str, Any] = {"epoch": p.epoch, "train_loss": train_loss, "lr": p.epoch_lr}
        # Only an epoch whose masks are final (ASP: pruned; STEP: past AutoSwitch) is a candidate
        # for best.pt, and only such epochs count towards patience, so that neither a dense epoch
        # nor the loss spike right after pruning decides what is exported or when training stops.
        final = all(hook.masks_final() for hook in self.hooks)
        if self.val_ds is not None and len(self.val_ds):
            inf = infer(self.model, self.val_ds, batch_size=self.eval_batch_size, device=self.device,
                        num_workers=cfg.num_workers, dtype=self.dtype, channels_last=self.channels_last)
            row["val_loss"] = float(self.loss_fn(inf.logits, inf.labels).item())
            row.update(epoch_metrics(inf.logits, inf.labels))
            improved = final and row["val_loss"] < p.best_val_loss - cfg.min_delta
        else:
            row["val_loss"] = float("nan")
            improved = final
        row["step"] = p.step
        row["time_s"] = round(p.train_time_s, 3)
        if self.hooks:
            row["masks_final"] = final
            for hook in self.hooks:
                row.update(hook.epoch_record())
        p.history.append(row)
        if self.on_epoch is not None and dist.is_main():
            self.on_epoch(shown_row(row))
        if improved:
            p.best_val_loss = row["val_loss"] if math.isfinite(row["val_loss"]) else p.best_val_loss
            p.best_epoch, p.bad_epochs = p.epoch, 0
            if dist.is_main():
                save_checkpoint(self.ckpt_dir / BEST, {"model": self.model.state_dict(), "epoch": p.epoch,
                                                        "val_loss": row["val_loss"]})
        elif final:
            p.bad_epochs += 1
        logger.info("epoch %d/%d: %s", p.epoch + 1, cfg.epochs, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
        p.epoch, p.batch, p.loss_sum, p.loss_count = p.epoch + 1, 0, 0.0, 0
        if cfg.patience and p.bad_epochs >= cfg.patience and p.epoch < cfg.epochs:
            p.stopped_early = True
            logger.info("early stopping after epoch %d (best epoch %d)", p.epoch, p.best_epoch + 1)
        self._save_last()
        if dist.is_main():
            write_history(self.out, self.history())
        dist.barrier()

    @property
    def eval_batch_size(self) -> int:
        return self.cfg.eval_batch_size or 2 * self.cfg.batch_size

    def history(self) -> pd.DataFrame:
        """The per-epoch rows, epochs numbered from 1 (see :func:`shown_row`)."""
        return pd.DataFrame([shown_row(r) for r in self.p.history])

    # ----------------------------------------------------------------- end of run
    def finish(self, test_ds: Dataset | None, keep_meta: Sequence[str]) -> FitResult:
        best = self.ckpt_dir / BEST
        if best.exists():
            self.model.load_state_dict(load_checkpoint(best)["model"])
        elif self.hooks and self.p.history:
            logger.warning("no epoch ended with final masks (hooks %s); the last epoch is exported",
                           [h.name for h in self.hooks])
        model = self.model
        for hook in self.hooks:
            model = hook.on_train_end(model) or model
        self.model = model
        preds = self._predictions(test_ds, keep_meta)
        summary = {
            "best_epoch": self.p.best_epoch + 1 if self.p.best_epoch >= 0 else None,  # 1-based
            "best_val_loss": self.p.best_val_loss if math.isfinite(self.p.best_val_loss) else None,
            "epochs_run": len(self.p.history),
            "stopped_early": self.p.stopped_early,
            "steps": self.p.step,
            "train_time_s": round(self.p.train_time_s, 3),
            "train_images_per_s": (self.p.images_seen * self.world / self.p.train_time_s
                                   if self.p.train_time_s else None),
            **self._resolved(),
            "sampler": self.sampler.summary() if hasattr(self.sampler, "summary") else {},
            "hooks_summary": {h.name: h.summary() for h in self.hooks},
        }
        if dist.is_main():
            write_summary(self.out, summary)
            write_history(self.out, self.history())
        dist.barrier()
        return FitResult(model, best if best.exists() else None, self.history(), summary, preds, self.out)

    def _predictions(self, test_ds: Dataset | None, keep_meta: Sequence[str]) -> pd.DataFrame | None:
        path = self.out / PREDICTIONS
        sets = [(s, d) for s, d in (("val", self.val_ds), ("test", test_ds)) if d is not None and len(d)]
        if not sets:
            return None
        if path.exists() and self._ran_nothing:
            df = pd.read_parquet(path)
            if set(df["split"]) == {s for s, _ in sets}:
                return df
        frames = []
        for split, ds in sets:
            inf = infer(self.model, ds, batch_size=self.eval_batch_size, device=self.device,
                        num_workers=self.cfg.num_workers, dtype=self.dtype, channels_last=self.channels_last,
                        keep_meta=keep_meta)
            frames.append(predictions_frame(inf, split))
        df = pd.concat(frames, ignore_index=True)
        if dist.is_main():
            save_predictions(df, self.out)
        return df


def fit(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset | None,
    cfg: TrainConfig | dict[str, Any],
    out_dir: str | Path,
    *,
    hooks: Sequence[TrainHook] = (),
    test_ds: Dataset | None = None,
    keep_meta: Sequence[str] = (),
    run_info: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    run: Run | None = None,
    restart: bool = False,
) -> FitResult:
    """Fine-tune ``model`` on ``train_ds``, keep the best validation-loss weights, resume from ``out_dir``.

    Args:
        model: A classifier taking ``(B, C, H, W)`` images in [0, 1]; 1 output (BCE) or C >= 2
            outputs (cross-entropy).
        train_ds: Dataset of ``(image, label[, meta])`` items.
        val_ds: Validation dataset (early stopping, best checkpoint); None = keep the last epoch.
        cfg: A :class:`TrainConfig` (or its dict).
        out_dir: The run folder (created; an existing run with the same ``cfg`` is resumed, one with
            another ``cfg`` refused, every changed setting listed).
        hooks: Extra :class:`TrainHook` objects (after the sparsity hook of ``cfg.sparsity``).
        test_ds: Also predict this set (split "test") with the best weights.
        keep_meta: Meta keys copied into the predictions table (e.g. "sex", "vendor").
        run_info: Extra facts recorded under ``run`` in config.yaml (data, source, image size, ...).
        on_epoch: Called on the main rank with each epoch's history row (e.g. an experiment tracker).
        run: ``out_dir`` already opened by the calling workflow (:func:`medbench.runs.open_run`);
            None: ``fit`` opens it itself (main rank) with the settings ``{"train": cfg.settings()}``.
        restart: With ``run=None``: discard a previous run in ``out_dir`` instead of refusing it.

    Returns:
        FitResult with the best weights loaded into ``model`` (or the model a hook returned).

    Raises:
        InputError: ``out_dir`` holds a run with other settings (and ``restart`` is False).
    """
    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.from_dict(dict(cfg))
    out = Path(out_dir)
    dist.init_from_env(cfg.device)
    with open_fit_run(out, cfg, run, restart=restart) as opened, frozen_backbone(model, cfg.linear_probe) as head:
        out.mkdir(parents=True, exist_ok=True)
        trainer = _Trainer(model, train_ds, val_ds, cfg, out, hooks, head, run_info, opened)
        trainer.on_epoch = on_epoch
        trainer.start()
        t0 = time.perf_counter()
        trainer.run()
        logger.info("training done in %.1f s (%d epochs, best epoch %d)", time.perf_counter() - t0,
                    len(trainer.p.history), trainer.p.best_epoch + 1)
        result = trainer.finish(test_ds, keep_meta)
        if opened is not None:
            opened.mark_unit("fit", opened.settings, epochs_run=result.summary["epochs_run"],
                             best_epoch=result.summary["best_epoch"])
    return result

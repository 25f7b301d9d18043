"""Frequency-shortcut experiment: how fast and how strongly does each source latch on to a
band-limited pattern that marks one class, and from which pattern amplitude on?

Protocol (after Source Matters / Lu et al. 2024, kept CPU-sized): synthetic chest radiographs
(``medbench.data.synthetic.make_cxr``, label = lesion) at ``size`` px, drawn per seed and cut into
train / i.i.d. test / o.o.d. test / validation (:func:`make_splits`). A band-limited pattern (low /
mid / high band, :func:`transferability.spectral.band_limited_pattern`) is added with amplitude
``a`` to every positive training, validation and i.i.d.-test image; in the o.o.d. test it is added
to every negative and to no positive. Each source is fine-tuned (Adam, cross-entropy) for
``epochs`` epochs, one fresh model per (band, amplitude, seed), through the training engine
(:func:`medbench.train.engine.fit`; the per-step curve is recorded by the :class:`StepCurve` hook);
the engine keeps the epoch of lowest validation loss. The test sets are used only for the figures.

Reported per unit (source, band, amplitude, seed): ``steps_to_loss`` / ``epochs_to_loss`` (first
step at which the mean training loss over the last ``window`` steps is below ``loss_threshold``;
NaN if never), ``steps_to_acc`` (same for the running training accuracy reaching
``acc_threshold``), validation, i.i.d. and o.o.d. AUC and ``auc_drop`` = i.i.d. - o.o.d. AUC (how
strongly the pattern is used), and the alignment of the model's input-gradient spectrum (before and
after training) with the pattern's spectrum. Across seeds (:mod:`transferability.shortcut_stats`):
mean and 95% t-interval per (source, band, amplitude), the onset amplitude of each (source, band),
and per amplitude Spearman's rank correlation between the alignment before training and
``auc_drop`` across (source, band) pairs, with a bootstrap CI over the seeds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medbench.errors import InputError
from medbench.train.config import TrainConfig
from medbench.train.hooks import TrainHook
from medbench.utils.files import write_json_atomic
from medbench.utils.rng import derive_seed
from transferability.shortcut_stats import alignment_rank_correlation, onset_amplitudes, summarise
from transferability.spectral import (
    BANDS,
    Spectrum,
    band_limited_pattern,
    input_gradient_spectrum,
    radial_psd,
    spectral_alignment,
)

log = logging.getLogger(__name__)

ModelFactory = Callable[[], nn.Module]

#: The default amplitude sweep and seeds.
DEFAULT_AMPLITUDES: tuple[float, ...] = (0.02, 0.05, 0.15)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
#: The data splits of one seed, in the order they are cut from one generator draw.
SPLITS: tuple[str, ...] = ("train", "iid", "ood", "val")
#: Columns of the per-unit table, in order.
TABLE_COLUMNS: tuple[str, ...] = ("source", "band", "amplitude", "seed", "steps_to_loss", "epochs_to_loss",
                                  "steps_to_acc", "final_loss", "best_epoch", "val_auc", "iid_auc", "ood_auc",
                                  "auc_drop", "align_before", "align_after")
ENGINE_DIR = "engine"
UNITS_DATA_DIR = "shortcut_units"
#: Tables built from the units (rebuilt when the set of units changes).
SUMMARY_FILES: tuple[str, ...] = ("table.csv", "curves.csv", "summary.csv", "onset.csv", "alignment.csv",
                                  "report.html")
SHORTCUT_OUTPUTS: tuple[str, ...] = (ENGINE_DIR, UNITS_DATA_DIR, *SUMMARY_FILES)


@dataclass
class ShortcutResult:
    """Outputs of :func:`frequency_shortcut_experiment`.

    Attributes:
        table: One row per (source, band, amplitude, seed) with the speed/strength figures.
        curves: Per-step training loss and accuracy (source, band, amplitude, seed, step, loss, acc).
        summary: Per (source, band, amplitude): mean and 95% t-interval of each figure over the seeds.
        onset: Per (source, band): smallest amplitude whose ``auc_drop`` CI lies above 0.
        alignment: Per amplitude: Spearman's rho (alignment before training vs ``auc_drop``, across
            (source, band) pairs) with its bootstrap CI over the seeds.
        spectra: (source, band, amplitude, seed, "before"|"after") -> input-gradient spectrum.
        pattern_spectra: (band, seed) -> spectrum of the pattern.
    """

    table: pd.DataFrame
    curves: pd.DataFrame
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    onset: pd.DataFrame = field(default_factory=pd.DataFrame)
    alignment: pd.DataFrame = field(default_factory=pd.DataFrame)
    spectra: dict[tuple[str, str, float, int, str], Spectrum] = field(default_factory=dict)
    pattern_spectra: dict[tuple[str, int], Spectrum] = field(default_factory=dict)


def _factories(sources: Mapping[str, ModelFactory] | Sequence[str], arch: str) -> dict[str, ModelFactory]:
    if isinstance(sources, Mapping):
        return dict(sources)
    from medbench.sources import create_source
    from medbench.sources.registry import get_card
    from transferability.pipeline import parse_source

    for spec in sources:  # an unknown name fails here, before any unit trains
        get_card(parse_source(spec)[0])

    def make(spec: str) -> ModelFactory:
        name, spec_arch = parse_source(spec)
        kw: dict[str, Any] = {"num_classes": 2, "in_chans": 1}
        if spec_arch or name in ("random", "imagenet"):
            kw["arch"] = spec_arch or arch
        return lambda: create_source(name, **kw)

    return {spec: make(spec) for spec in sources}


def _first_below(values: np.ndarray, threshold: float, window: int, above: bool = False) -> float:
    if len(values) < window:
        return float("nan")
    run = np.convolve(values, np.ones(window) / window, mode="valid")
    hit = np.flatnonzero(run >= threshold if above else run < threshold)
    return float(hit[0] + window) if hit.size else float("nan")


class StepCurve(TrainHook):
    """Engine hook recording each optimizer step's training loss and batch accuracy.

    Its state travels in the engine's ``last.pt``, so a resumed or finished run folder gives the
    same curve as an uninterrupted run.
    """

    name = "step-curve"

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.accs: list[float] = []

    def on_batch_end(self, step: int, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.losses.append(float(loss))
        pred = logits.argmax(1) if logits.ndim == 2 and logits.shape[1] > 1 else (logits.reshape(-1) > 0).long()
        self.accs.append(float((pred == targets).float().mean()))

    def state_dict(self) -> dict[str, Any]:
        return {"losses": torch.tensor(self.losses, dtype=torch.float64),
                "accs": torch.tensor(self.accs, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.losses = [float(v) for v in state.get("losses", [])]
        self.accs = [float(v) for v in state.get("accs", [])]


def _fine_tune(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
               cfg: TrainConfig, run_dir: Path) -> tuple[nn.Module, StepCurve, int]:
    """Fine-tune through the engine and record the curve; the engine keeps the epoch of lowest
    validation loss (``val``), which is returned with its 1-based number.

    The engine seeds the global torch RNG from ``cfg.seed``; the caller's RNG state is restored.
    """
    from medbench.data.dataset import ArrayDataset
    from medbench.train.engine import fit

    curve = StepCurve()
    with torch.random.fork_rng(devices=[]):
        res = fit(model, ArrayDataset(*train), ArrayDataset(*val), cfg, run_dir, hooks=[curve])
    return res.model, curve, int(res.summary["best_epoch"])


@contextlib.contextmanager
def _engine_folder(work_dir: Path | None, unit: str) -> Iterator[Path]:
    """The engine's run folder of one unit: ``work_dir/engine/<unit>`` (kept, resumable) or temporary."""
    if work_dir is not None:
        path = work_dir / ENGINE_DIR / unit
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"shortcut-{unit}-") as tmp:
        yield Path(tmp)


def make_splits(*, n_train: int, n_val: int, n_test: int, size: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The experiment's data of one seed: split name -> (images (n, size, size) in [0, 1], labels).

    One draw of :func:`medbench.data.synthetic.make_cxr` (each image seeded by ``(seed, uid)``),
    cut into "train", "iid", "ood" and "val" (the held-out validation split, last, so adding it
    leaves the other splits as they were). Every split must hold both classes.
    """
    from medbench.data.synthetic import make_cxr

    images, meta = make_cxr(n_train + 2 * n_test + n_val, size=size, seed=seed)
    y = meta["label"].to_numpy().astype(np.int64)
    edges = np.cumsum([0, n_train, n_test, n_test, n_val])
    splits = {name: (images[a:b], y[a:b]) for name, a, b in zip(SPLITS, edges[:-1], edges[1:], strict=True)}
    for name, (_, lab) in splits.items():
        if len(np.unique(lab)) < 2:
            raise InputError(f"seed {seed}: the synthetic {name} split drew a single class; raise n_train/n_val/n_test")
    return splits


def _auc(model: nn.Module, x: torch.Tensor, y: np.ndarray, device: Any, batch_size: int) -> float:
    from sklearn.metrics import roc_auc_score

    from medbench.data.dataset import ArrayDataset
    from medbench.train.predict import predict

    df = predict(model, ArrayDataset(x, y), batch_size=batch_size, device=device, amp="none")
    return float(roc_auc_score(y, df["prob"].to_numpy()))


def _train_config(*, epochs: int, batch_size: int, lr: float, seed: int,
                  device: str | torch.device) -> TrainConfig:
    """The engine settings of the protocol: plain Adam (no weight decay) at a constant rate,
    cross-entropy, all ``epochs`` run (no early stopping; the validation split selects the kept
    epoch), fp32, batch order seeded by ``seed`` alone so that every source, band and amplitude
    of a seed sees the same order."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam", weight_decay=0.0,
                       schedule="constant", patience=None, seed=seed, device=str(device), amp="none",
                       channels_last=False, progress=False)


def _unit_name(source: str, band: str, amplitude: float, seed: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", source)
    return f"{safe}__{band}__a{amplitude:g}__s{seed}"


def _with_pattern(images: np.ndarray, mark: np.ndarray, pattern: np.ndarray, amplitude: float) -> torch.Tensor:
    x = images + amplitude * pattern[None] * mark[:, None, None]
    return torch.from_numpy(np.clip(x, 0, 1).astype(np.float32))[:, None]


def _run_unit(name: str, factory: ModelFactory, band: str, amplitude: float, seed: int,
              splits: dict[str, tuple[np.ndarray, np.ndarray]], cfg: TrainConfig, spec: dict[str, Any],
              engine_dir: Path | None, unit: str) -> dict[str, Any]:
    """Train and measure one (source, band, amplitude, seed); returns a JSON-able record."""
    device = cfg.device
    pattern = band_limited_pattern(spec["size"], band, seed=seed)
    pattern_spec = radial_psd(pattern)
    # the pattern marks the positives of train, val and i.i.d. test, and the negatives of the o.o.d. test
    x = {k: _with_pattern(img, (lab == 0) if k == "ood" else (lab == 1), pattern, amplitude)
         for k, (img, lab) in splits.items()}
    y = {k: torch.from_numpy(lab) for k, (_, lab) in splits.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "shortcut-init", name))
        model = factory()
    model.to(device)
    before = input_gradient_spectrum(model, x["train"][:32], y["train"][:32], objective="ce", device=device)
    with _engine_folder(engine_dir, unit) as run_dir:
        model, curve, best_epoch = _fine_tune(model, (x["train"], y["train"]), (x["val"], y["val"]), cfg, run_dir)
    after = input_gradient_spectrum(model, x["train"][:32], y["train"][:32], objective="ce", device=device)
    losses, accs, window = np.array(curve.losses), np.array(curve.accs), spec["window"]
    steps_per_epoch = -(-spec["n_train"] // cfg.batch_size)
    s_loss = _first_below(losses, spec["loss_threshold"], window)
    auc = {k: _auc(model, x[k], splits[k][1], device, 2 * cfg.batch_size) for k in ("val", "iid", "ood")}
    row = {"source": name, "band": band, "amplitude": float(amplitude), "seed": int(seed),
           "steps_to_loss": s_loss, "epochs_to_loss": s_loss / steps_per_epoch,
           "steps_to_acc": _first_below(accs, spec["acc_threshold"], window, above=True),
           "final_loss": float(np.mean(losses[-window:])), "best_epoch": best_epoch,
           "val_auc": auc["val"], "iid_auc": auc["iid"], "ood_auc": auc["ood"], "auc_drop": auc["iid"] - auc["ood"],
           "align_before": spectral_alignment(before, pattern_spec),
           "align_after": spectral_alignment(after, pattern_spec)}
    log.info("shortcut %s/%s amplitude %g seed %d: iid AUC %.3f, ood AUC %.3f (best epoch %d by val loss)",
             name, band, amplitude, seed, auc["iid"], auc["ood"], best_epoch)
    return {"row": row, "losses": curve.losses, "accs": curve.accs,
            "spectra": {stage: {"freqs": s.freqs.tolist(), "power": s.power.tolist()}
                        for stage, s in (("before", before), ("after", after), ("pattern", pattern_spec))}}


def _nan(v: Any) -> Any:
    return float("nan") if v is None else v


def frequency_shortcut_experiment(
    sources: Mapping[str, ModelFactory] | Sequence[str],
    *,
    bands: Sequence[str] = ("low", "mid", "high"),
    amplitudes: Sequence[float] = DEFAULT_AMPLITUDES,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    n_train: int = 96,
    n_val: int = 48,
    n_test: int = 64,
    size: int = 64,
    epochs: int = 3,
    batch_size: int = 16,
    lr: float = 1e-3,
    loss_threshold: float = 0.3,
    acc_threshold: float = 0.9,
    window: int = 5,
    arch: str = "resnet18",
    n_boot: int = 2000,
    device: str | torch.device = "cpu",
    work_dir: str | Path | None = None,
    restart: bool = False,
) -> ShortcutResult:
    """Run the experiment for every source, band, amplitude and seed (see the module docstring).

    Args:
        sources: Source specs "name" or "name:arch" for ``medbench.sources.create_source``
            (2-class head, grey input; "random"/"imagenet" default to ``arch``) or a mapping
            name -> zero-argument model factory.
        bands: Bands of :data:`transferability.spectral.BANDS`.
        amplitudes: Pattern amplitudes added to the [0, 1] images (then clipped): the sweep.
        seeds: Each seed draws its own data, pattern, initialisation and batch order.
        n_train: Training images; ``n_val`` validation images (checkpoint selection: the epoch of
            lowest validation loss is kept); ``n_test`` images in each test set.
        size: Image size in pixels.
        epochs: Training epochs.
        batch_size: Batch size.
        lr: Adam learning rate.
        loss_threshold: Training-loss level that counts as "latched on".
        acc_threshold: Training-accuracy level for ``steps_to_acc``.
        window: Steps in the running mean of loss/accuracy.
        arch: Architecture for "random"/"imagenet" sources.
        n_boot: Bootstrap replicates of the alignment rank correlation's CI.
        device: Where to train.
        work_dir: Run folder (:func:`medbench.runs.open_run`, workflow "shortcut"): every
            (source, band, amplitude, seed) is one unit, its engine run under ``engine/`` and its
            record under ``shortcut_units/``, so a killed run resumes; other sources, bands,
            amplitudes or seeds only add units, other settings are refused (``restart`` discards
            the old run). None: temporary folders, nothing kept.
        restart: With ``work_dir``: discard a run computed with other settings.

    Raises:
        InputError: Unknown band, empty sweep, a split with one class, or ``work_dir`` holding a
            run with other settings.
    """
    for b in bands:
        if b not in BANDS:
            raise InputError(f"bands: {b!r} is not one of {list(BANDS)}")
    if not bands or not amplitudes or not seeds:
        raise InputError("bands, amplitudes and seeds each need at least one value")
    if any(not 0 < float(a) <= 1 for a in amplitudes):
        raise InputError(f"amplitudes must lie in (0, 1] (images are in [0, 1]), got {list(amplitudes)}")
    factories = _factories(sources, arch)
    amplitudes = [float(a) for a in dict.fromkeys(amplitudes)]
    seeds = [int(s) for s in dict.fromkeys(seeds)]
    spec = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "size": size, "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "loss_threshold": loss_threshold,
            "acc_threshold": acc_threshold, "window": window, "arch": arch}
    splits = {s: make_splits(n_train=n_train, n_val=n_val, n_test=n_test, size=size, seed=s) for s in seeds}
    if work_dir is None:
        run_ctx: Any = contextlib.nullcontext(None)
    else:
        from medbench.runs.folder import open_run

        run_ctx = open_run(work_dir, "shortcut", {"shortcut": spec}, outputs=SHORTCUT_OUTPUTS, restart=restart)
    records = []
    with run_ctx as run:
        if run is not None:
            run.record_resolved({"sources": list(factories), "bands": list(bands), "amplitudes": amplitudes,
                                 "seeds": seeds}, summaries=SUMMARY_FILES)
        for seed in seeds:
            cfg = _train_config(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)
            for amplitude in amplitudes:
                for band in bands:
                    for name, factory in factories.items():
                        unit = _unit_name(name, band, amplitude, seed)
                        coords = {"source": name, "band": band, "amplitude": amplitude, "seed": seed}
                        rec_path = run.out / UNITS_DATA_DIR / f"{unit}.json" if run is not None else None
                        if run is not None and run.unit_done(unit, coords, [rec_path.relative_to(run.out)]):
                            rec = json.loads(rec_path.read_text(encoding="utf-8"))
                        else:
                            rec = _run_unit(name, factory, band, amplitude, seed, splits[seed], cfg, spec,
                                            run.out if run is not None else None, unit)
                            if run is not None:
                                write_json_atomic(rec_path, rec)
                                run.mark_unit(unit, coords)
                                # the unit's record is its result: its resume weights (tens of MB
                                # per unit) go; the engine's history and log stay
                                shutil.rmtree(run.out / ENGINE_DIR / unit / "checkpoints", ignore_errors=True)
                        records.append(rec)
    return _assemble(records, n_boot=n_boot, boot_seed=seeds[0])


def _assemble(records: list[dict[str, Any]], *, n_boot: int, boot_seed: int) -> ShortcutResult:
    rows, curves = [], []
    result = ShortcutResult(pd.DataFrame(), pd.DataFrame())
    for rec in records:
        row = {k: _nan(v) for k, v in rec["row"].items()}
        rows.append(row)
        key = (row["source"], row["band"], row["amplitude"], row["seed"])
        curves += [{"source": key[0], "band": key[1], "amplitude": key[2], "seed": key[3], "step": k + 1,
                    "loss": _nan(lo_), "acc": _nan(ac)}
                   for k, (lo_, ac) in enumerate(zip(rec["losses"], rec["accs"], strict=True))]
        for stage, s in rec["spectra"].items():
            spectrum = Spectrum(np.asarray(s["freqs"], dtype=np.float64), np.asarray(s["power"], dtype=np.float64))
            if stage == "pattern":
                result.pattern_spectra[(key[1], key[3])] = spectrum
            else:
                result.spectra[(*key, stage)] = spectrum
    result.table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    result.curves = pd.DataFrame(curves)
    result.summary = summarise(result.table)
    result.onset = onset_amplitudes(result.summary)
    result.alignment = alignment_rank_correlation(result.table, n_boot=n_boot, seed=boot_seed)
    return result


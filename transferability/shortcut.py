"""Frequency-shortcut experiment: how fast and how strongly does each source latch on to a
band-limited pattern that marks one class?

Protocol (after Source Matters / Lu et al. 2024, kept CPU-sized): synthetic chest radiographs
(``medbench.data.synthetic.make_cxr``, label = lesion) at ``size`` px; a band-limited pattern
(low / mid / high band, :func:`transferability.spectral.band_limited_pattern`) is added with
amplitude ``amplitude`` to every positive training and i.i.d.-test image; in the o.o.d. test it
is added to every negative and to no positive. Each source is fine-tuned (Adam, cross-entropy,
fixed seeds) for ``epochs`` epochs, one fresh model per band, through the training engine
(:func:`medbench.train.engine.fit`; the per-step curve is recorded by the :class:`StepCurve` hook).

Reported per (source, band): ``steps_to_loss`` / ``epochs_to_loss`` (first step at which the
mean training loss over the last ``window`` steps is below ``loss_threshold``; NaN if never),
``steps_to_acc`` (same for the running training accuracy reaching ``acc_threshold``), i.i.d. and
o.o.d. AUC and their difference ``auc_drop`` (how strongly the pattern is used), and the
alignment of the model's input-gradient spectrum (before and after training) with the
pattern's spectrum.
"""

from __future__ import annotations

import contextlib
import logging
import re
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
from medbench.utils.rng import derive_seed
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


@dataclass
class ShortcutResult:
    """Outputs of :func:`frequency_shortcut_experiment`.

    Attributes:
        table: One row per (source, band) with the speed/strength figures.
        curves: Per-step training loss and accuracy (source, band, step, loss, acc).
        spectra: (source, band, "before"|"after") -> input-gradient spectrum.
        pattern_spectra: band -> spectrum of the pattern.
    """

    table: pd.DataFrame
    curves: pd.DataFrame
    spectra: dict[tuple[str, str, str], Spectrum] = field(default_factory=dict)
    pattern_spectra: dict[str, Spectrum] = field(default_factory=dict)


def _factories(sources: Mapping[str, ModelFactory] | Sequence[str], arch: str) -> dict[str, ModelFactory]:
    if isinstance(sources, Mapping):
        return dict(sources)
    from medbench.sources import create_source
    from transferability.pipeline import parse_source

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


@contextlib.contextmanager
def _run_folder(work_dir: str | Path | None, source: str, band: str, data: dict[str, Any]) -> Iterator[Path]:
    """The engine's run folder of one (source, band): under ``work_dir`` (kept, resumable) or temporary.

    The folder name carries a hash of the data settings (``data``), which the engine's own resume
    check does not see: changed data trains a new unit instead of reloading the old one.
    """
    from medbench.runs.folder import settings_hash

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", source)
    if work_dir is not None:
        path = Path(work_dir) / f"{safe}__{band}__{settings_hash(data)[:8]}"
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"shortcut-{safe}-{band}-") as tmp:
        yield Path(tmp)


def _fine_tune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
               run_dir: Path) -> tuple[nn.Module, StepCurve]:
    """Fine-tune through the engine (no validation set: the last epoch is kept) and record the curve.

    The engine seeds the global torch RNG from ``cfg.seed``; the caller's RNG state is restored.
    """
    from medbench.data.dataset import ArrayDataset
    from medbench.train.engine import fit

    curve = StepCurve()
    with torch.random.fork_rng(devices=[]):
        res = fit(model, ArrayDataset(x, y), None, cfg, run_dir, hooks=[curve])
    return res.model, curve


def _auc(model: nn.Module, x: torch.Tensor, y: np.ndarray, device: Any, batch_size: int) -> float:
    from sklearn.metrics import roc_auc_score

    from medbench.data.dataset import ArrayDataset
    from medbench.train.predict import predict

    df = predict(model, ArrayDataset(x, y), batch_size=batch_size, device=device, amp="none")
    return float(roc_auc_score(y, df["prob"].to_numpy()))


def _train_config(*, epochs: int, batch_size: int, lr: float, seed: int,
                  device: str | torch.device) -> TrainConfig:
    """The engine settings of the protocol: plain Adam (no weight decay) at a constant rate,
    cross-entropy, every epoch kept (no validation, no early stopping), fp32, batch order seeded
    by ``seed`` alone so that every source and band sees the same order."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam", weight_decay=0.0,
                       schedule="constant", patience=None, seed=seed, device=str(device), amp="none",
                       channels_last=False, progress=False)


def frequency_shortcut_experiment(
    sources: Mapping[str, ModelFactory] | Sequence[str],
    *,
    bands: Sequence[str] = ("low", "mid", "high"),
    n_train: int = 96,
    n_test: int = 64,
    size: int = 64,
    epochs: int = 3,
    batch_size: int = 16,
    lr: float = 1e-3,
    amplitude: float = 0.15,
    loss_threshold: float = 0.3,
    acc_threshold: float = 0.9,
    window: int = 5,
    arch: str = "resnet18",
    seed: int = 0,
    device: str | torch.device = "cpu",
    work_dir: str | Path | None = None,
) -> ShortcutResult:
    """Run the experiment for every source and band (see the module docstring).

    Args:
        sources: Source specs "name" or "name:arch" for ``medbench.sources.create_source``
            (2-class head, grey input; "random"/"imagenet" default to ``arch``) or a mapping
            name -> zero-argument model factory.
        bands: Bands of :data:`transferability.spectral.BANDS`.
        n_train: Training images; ``n_test`` images in each test set.
        size: Image size in pixels.
        epochs: Training epochs.
        batch_size: Batch size.
        lr: Adam learning rate.
        amplitude: Pattern amplitude added to the [0, 1] images (then clipped).
        loss_threshold: Training-loss level that counts as "latched on".
        acc_threshold: Training-accuracy level for ``steps_to_acc``.
        window: Steps in the running mean of loss/accuracy.
        arch: Architecture for "random"/"imagenet" sources.
        seed: Seeds data, model initialisation (locally, via ``torch.random.fork_rng``) and order.
        device: Where to train.
        work_dir: Keep the engine's run folder of each (source, band) here
            (``<source>__<band>__<data hash>``; a re-run with the same settings resumes or reloads
            it, changed training settings are refused by the engine); None: temporary folders.
    """
    from medbench.data.synthetic import make_cxr

    for b in bands:
        if b not in BANDS:
            raise InputError(f"bands: {b!r} is not one of {list(BANDS)}")
    factories = _factories(sources, arch)
    images, meta = make_cxr(n_train + 2 * n_test, size=size, seed=seed)
    y_all = meta["label"].to_numpy().astype(np.int64)
    if len(np.unique(y_all[:n_train])) < 2 or len(np.unique(y_all[n_train:])) < 2:
        raise InputError("the synthetic data drew a single class; raise n_train/n_test")
    tr, iid, ood = slice(0, n_train), slice(n_train, n_train + n_test), slice(n_train + n_test, None)
    cfg = _train_config(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)
    data_settings = {"n_train": n_train, "n_test": n_test, "size": size, "amplitude": amplitude, "seed": seed}
    rows, curves = [], []
    result = ShortcutResult(pd.DataFrame(), pd.DataFrame())
    for band in bands:
        pattern = band_limited_pattern(size, band, seed=seed)
        result.pattern_spectra[band] = radial_psd(pattern)

        def with_pattern(sl: slice, mark: np.ndarray, pattern: np.ndarray = pattern) -> torch.Tensor:
            x = images[sl] + amplitude * pattern[None] * mark[:, None, None]
            return torch.from_numpy(np.clip(x, 0, 1).astype(np.float32))[:, None]

        x_tr = with_pattern(tr, y_all[tr] == 1)
        x_iid = with_pattern(iid, y_all[iid] == 1)
        x_ood = with_pattern(ood, y_all[ood] == 0)
        y_tr = torch.from_numpy(y_all[tr])
        for name, factory in factories.items():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "shortcut-init", name))
                model = factory()
            model.to(device)
            before = input_gradient_spectrum(model, x_tr[:32], y_tr[:32], objective="ce", device=device)
            with _run_folder(work_dir, name, band, data_settings) as run_dir:
                model, curve = _fine_tune(model, x_tr, y_tr, cfg, run_dir)
            losses, accs = curve.losses, curve.accs
            after = input_gradient_spectrum(model, x_tr[:32], y_tr[:32], objective="ce", device=device)
            result.spectra[(name, band, "before")] = before
            result.spectra[(name, band, "after")] = after
            steps_per_epoch = -(-n_train // batch_size)
            s_loss = _first_below(np.array(losses), loss_threshold, window)
            auc_iid = _auc(model, x_iid, y_all[iid], device, 2 * batch_size)
            auc_ood = _auc(model, x_ood, y_all[ood], device, 2 * batch_size)
            rows.append({
                "source": name, "band": band, "steps_to_loss": s_loss,
                "epochs_to_loss": s_loss / steps_per_epoch,
                "steps_to_acc": _first_below(np.array(accs), acc_threshold, window, above=True),
                "final_loss": float(np.mean(losses[-window:])), "iid_auc": auc_iid, "ood_auc": auc_ood,
                "auc_drop": auc_iid - auc_ood,
                "align_before": spectral_alignment(before, result.pattern_spectra[band]),
                "align_after": spectral_alignment(after, result.pattern_spectra[band]),
            })
            curves += [{"source": name, "band": band, "step": k + 1, "loss": lo_, "acc": ac}
                       for k, (lo_, ac) in enumerate(zip(losses, accs))]
            log.info("shortcut %s/%s: iid AUC %.3f, ood AUC %.3f", name, band, auc_iid, auc_ood)
    result.table = pd.DataFrame(rows)
    result.curves = pd.DataFrame(curves)
    return result


def shortcut_report(result: ShortcutResult, out_dir: str | Path, *, title: str = "Frequency shortcuts") -> Path:
    """Write table.csv, curves.csv and report.html (tables, loss curves, spectra per source)."""
    import matplotlib.pyplot as plt

    from medbench.eval.report import HtmlReport
    from transferability.spectral import plot_spectra

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(out / "table.csv", index=False)
    result.curves.to_csv(out / "curves.csv", index=False)
    rep = HtmlReport(title, subtitle="band-limited pattern on the positives; o.o.d. test moves it to the negatives")
    rep.heading("Speed and strength").table(result.table, caption="steps_to_loss: first step with running "
                                            "training loss below the threshold; auc_drop = iid_auc - ood_auc")
    for band, g in result.curves.groupby("band", sort=False):
        fig, ax = plt.subplots(figsize=(5.5, 3.2))
        for src, h in g.groupby("source", sort=False):
            ax.plot(h["step"], h["loss"].rolling(5, min_periods=1).mean(), label=str(src))
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (running mean)")
        ax.set_title(f"{band} band")
        ax.legend(fontsize=7)
        fig.tight_layout()
        rep.figure(fig, caption=f"training loss, {band}-band shortcut")
    sources = list(dict.fromkeys(k[0] for k in result.spectra))
    for src in sources:
        spectra: dict[str, Spectrum] = {}
        for (s_, band, stage), spec in result.spectra.items():
            if s_ == src and (stage == "before" and band == next(iter(result.pattern_spectra))):
                spectra["gradients, pre-trained"] = spec
            elif s_ == src and stage == "after":
                spectra[f"gradients after {band}-band fine-tuning"] = spec
        spectra.update({f"{b}-band pattern": s for b, s in result.pattern_spectra.items()})
        rep.figure(plot_spectra(spectra, title=f"{src}: input-gradient spectra"),
                   caption="radially averaged power, each curve scaled to unit sum (DC omitted)")
    return rep.save(out / "report.html")

"""Training GDCE: learn per-image curves that map source-vendor X-rays onto the reference look.

Two recipes (``GDCEConfig.recipe``, recorded in the saved model):

- ``"paper"`` (Lu et al. 2025, YCL92/GDCE): cross-entropy of a frozen reference-vendor classifier
  on harmonised source and harmonised reference images; a feature loss on global-average-pooled
  VGG16 conv2_2 features taken before the ReLU, per-image L1 with a source term
  ``|f(H(src_i)) - f(ref_i)|`` and a reference term ``|f(H(ref_i)) - f(ref_i)|``; total
  ``lambda * floor(CE / VGG) * VGG + (1 - lambda) * CE`` (``floor`` of detached values, lambda 0.5
  for chest X-rays, 0.95 for mammography); Adam 1e-4; 12 images per batch per domain,
  class-balanced; random horizontal flips; identity start.
- ``"medbench"`` (a deliberate CPU-budget variant, not the paper): any early-feature network
  (default EfficientNet-Lite0 ``blocks.1``), L1 between *batch means* of pooled features with a
  source term only, ``CE + lambda_feat * feat`` with a fixed weight, and a start at the global
  curve fitted to the pooled intensity histograms.

Batches are unpaired and class-balanced. The kept model is the step with the best worst-per-class
recall on held-out source-vendor validation images (never the training images: without a
validation set a stratified share of the source images is held out); step 0 is the starting
curve and wins ties, which the result reports (``kept_start``).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from harmonization.xray.curves import N_ITERATIONS, fit_curve_to_map
from harmonization.xray.predictor import CurvePredictor
from medbench.errors import InputError
from medbench.runs.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


@dataclass
class GDCEConfig:
    """Training settings (paper: Adam 1e-4, input 256, n = 8).

    ``init="histogram"`` (a medbench addition; ``"identity"`` is the paper's start) sets the head
    bias to the curve that best maps the pooled source-vendor intensity quantiles onto the
    reference quantiles, so training starts from the right global curve and refines it per image:
    on a CPU budget of a few hundred steps this is the difference between a curve that moved and
    one that did not.
    """

    steps: int = 600
    batch_per_class: int = 8
    lr: float = 1e-4
    lambda_feat: float = 1.0
    n_iterations: int = N_ITERATIONS
    input_size: int = 256
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    val_every: int = 50
    init: str = "histogram"
    seed: int = 0
    device: str = "cpu"
    recipe: str = "medbench"
    loss_lambda: float = 0.5
    flip: bool = False
    val_fraction: float = 0.2
    feature_network: str = ""
    extra: dict = field(default_factory=dict)


RECIPES = ("medbench", "paper")


def paper_config(**overrides) -> GDCEConfig:
    """The paper's settings: Adam 1e-4, 12 images per batch (6 per class), flips, identity start,
    lambda 0.5 (chest X-rays; 0.95 for the mammography runs)."""
    base = {"recipe": "paper", "lr": 1e-4, "batch_per_class": 6, "flip": True, "init": "identity",
            "loss_lambda": 0.5}
    return GDCEConfig(**{**base, **overrides})


@dataclass
class GDCEResult:
    predictor: CurvePredictor
    history: list[dict]
    best_step: int
    best_worst_recall: float
    start_params: np.ndarray | None = None  # the starting curve (step 0), one global parameter vector

    @property
    def kept_start(self) -> bool:
        """True when the kept model is the step-0 starting curve (training did not improve on it)."""
        return self.best_step == 0


def pooled_features(feature_net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled features ``(B, C)``."""
    return feature_net(x).mean(dim=(2, 3))


def paper_feature_loss(feature_net: nn.Module, harm_source: torch.Tensor, harm_reference: torch.Tensor,
                       reference: torch.Tensor) -> torch.Tensor:
    """Per-image L1 of pooled features, source term plus reference term (image ``i`` against
    reference image ``i`` of the same unpaired batch), each averaged over images and channels."""
    with torch.no_grad():
        f_ref = pooled_features(feature_net, reference)
    return ((pooled_features(feature_net, harm_source) - f_ref).abs().mean()
            + (pooled_features(feature_net, harm_reference) - f_ref).abs().mean())


def paper_weighting(ce: torch.Tensor, feat: torch.Tensor, loss_lambda: float) -> torch.Tensor:
    """``lambda * floor(CE / VGG) * VGG + (1 - lambda) * CE`` with the ratio from detached values."""
    f = float(feat.detach())
    ratio = math.floor(float(ce.detach()) / f) if f > 0 else 0.0
    return loss_lambda * ratio * feat + (1.0 - loss_lambda) * ce


def _random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


def holdout_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified (train, validation) index split; each class keeps >= 1 training and >= 1
    validation image."""
    gen = torch.Generator().manual_seed(seed + 7919)
    tr, va = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        va.append(idx[:k])
        tr.append(idx[k:])
    return torch.cat(tr).sort().values, torch.cat(va).sort().values


def _as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images, dtype=np.float32) if not isinstance(images, torch.Tensor) else images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputError(f"GDCE expects grey images (N, H, W) or (N, 1, H, W), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError("images contain NaN/inf")
    return x.float().clamp(0, 1)


def _labels(y: np.ndarray | torch.Tensor, n: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.array(y.detach().cpu() if isinstance(y, torch.Tensor) else y)).long()
    if t.shape != (n,):
        raise InputError(f"{what} labels must have shape ({n},), got {tuple(t.shape)}")
    if len(torch.unique(t)) < 2:
        raise InputError(f"{what} images need both classes for class-balanced batches")
    return t


class _BalancedSampler:
    """Draw ``k`` indices per class with a private generator."""

    def __init__(self, y: torch.Tensor, k: int, gen: torch.Generator) -> None:
        self.by_class = [torch.nonzero(y == c).flatten() for c in torch.unique(y)]
        self.k, self.gen = k, gen

    def __call__(self) -> torch.Tensor:
        out = [idx[torch.randint(len(idx), (self.k,), generator=self.gen)] for idx in self.by_class]
        return torch.cat(out)


@torch.no_grad()
def validation_scores(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      predictor: CurvePredictor | None = None, batch: int = 64) -> tuple[float, float]:
    """(worst per-class recall, mean cross-entropy) of ``classifier`` on (harmonised) ``images``."""
    logits = []
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        if predictor is not None:
            x = predictor.harmonize(x)
        logits.append(classifier(x))
    z = torch.cat(logits)
    p = z.argmax(1)
    worst = float(min((p[labels == c] == c).float().mean() for c in torch.unique(labels)))
    return worst, float(F.cross_entropy(z, labels))


def histogram_init(source: torch.Tensor, reference: torch.Tensor, n: int, *, n_quantiles: int = 129,
                   max_pixels: int = 2_000_000) -> np.ndarray:
    """Curve parameters mapping pooled source quantiles onto pooled reference quantiles."""
    q = torch.linspace(0.0, 1.0, n_quantiles, dtype=torch.float64)[1:-1]
    qs = [torch.quantile(t.reshape(-1)[:: max(1, t.numel() // max_pixels)].double(), q).numpy()
          for t in (source, reference)]
    a, _ = fit_curve_to_map(qs[0], qs[1], n=n, steps=800)
    return a


def fit_gdce(
    classifier: nn.Module,
    feature_net: nn.Module,
    source_images: np.ndarray | torch.Tensor,
    source_labels: np.ndarray | torch.Tensor,
    reference_images: np.ndarray | torch.Tensor,
    reference_labels: np.ndarray | torch.Tensor,
    *,
    val_images: np.ndarray | torch.Tensor | None = None,
    val_labels: np.ndarray | torch.Tensor | None = None,
    cfg: GDCEConfig | None = None,
    out_path: str | Path | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> GDCEResult:
    """Train a :class:`CurvePredictor`.

    Args:
        classifier: Frozen reference-vendor classifier taking [0, 1] images, returning logits.
        feature_net: Frozen early-feature network (e.g. :func:`feature_network_from_source`).
        source_images, source_labels: Training images of the vendors to harmonise (any mix).
        reference_images, reference_labels: Reference-vendor images.
        val_images, val_labels: Source-vendor validation images for model selection (default:
            a stratified ``cfg.val_fraction`` of the source images, held out from training).
        cfg: Settings.
        out_path: Where to save the best predictor (:func:`save_predictor`: the shared atomic
            checkpoint writer of :mod:`medbench.runs.checkpoint`).
        checkpoint: Resume file, written atomically (weights only) after every "epoch" (as many
            steps as it takes the source batches to draw as many images as there are), every
            validation and the last step; when it exists, training resumes from it (predictor,
            Adam, the sampling generator, best model so far, history, starting curve), so a killed
            run ends with the same result as an uninterrupted one. A file from other settings or
            other image counts is refused.
    """
    cfg = cfg or GDCEConfig()
    if cfg.recipe not in RECIPES:
        raise InputError(f"recipe must be one of {RECIPES}, got {cfg.recipe!r}")
    dev = torch.device(cfg.device)
    xs, xr = _as_tensor(source_images), _as_tensor(reference_images)
    ys, yr = _labels(source_labels, len(xs), "source"), _labels(reference_labels, len(xr), "reference")
    if val_images is not None:
        xv = _as_tensor(val_images)
        yv = _labels(val_labels, len(xv), "validation")
    else:  # hold out a validation share: selecting on training images favours whatever fits them
        tr, va = holdout_split(ys, cfg.val_fraction, cfg.seed)
        xv, yv = xs[va], ys[va]
        xs, ys = xs[tr], ys[tr]
        log.info("GDCE: %d source images held out for model selection", len(va))
    xv, yv = xv.to(dev), yv.to(dev)
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):  # seeded predictor init; no global state leaks
        torch.manual_seed(cfg.seed)
        predictor = CurvePredictor(cfg.n_iterations, cfg.input_size, tuple(cfg.widths)).to(dev)
    if cfg.init not in ("histogram", "identity"):
        raise InputError(f"init must be 'histogram' or 'identity', got {cfg.init!r}")
    sizes = [len(xs), len(xr), len(xv)]
    resumed = _load_progress(checkpoint, cfg, sizes)
    if resumed is not None:  # the starting curve was recorded: the predictor state comes from the file
        start_params = resumed["start_params"].numpy()
    else:
        if cfg.init == "histogram":
            a0 = histogram_init(xs, xr, cfg.n_iterations)
            with torch.no_grad():
                predictor.head[-1].bias.copy_(torch.atanh(torch.as_tensor(a0).clamp(-0.999, 0.999)).float())
        with torch.no_grad():
            start_params = torch.tanh(predictor.head[-1].bias).detach().cpu().numpy().astype(np.float64)
    classifier = classifier.to(dev).eval()
    feature_net = feature_net.to(dev).eval()
    for p in list(classifier.parameters()) + list(feature_net.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.Adam(predictor.parameters(), lr=cfg.lr)
    samp_s, samp_r = _BalancedSampler(ys, cfg.batch_per_class, gen), _BalancedSampler(yr, cfg.batch_per_class, gen)
    # one "epoch": as many steps as it takes the source batches to draw as many images as there are
    epoch_steps = max(1, math.ceil(len(xs) / (cfg.batch_per_class * len(samp_s.by_class))))
    if resumed is None:
        best_state = copy.deepcopy(predictor.state_dict())
        wr0, ce0 = validation_scores(classifier, xv, yv, predictor)
        best_key, best_step, done = (wr0, -ce0), 0, 0
        history = [{"step": 0, "worst_recall": wr0, "val_ce": ce0}]
    else:
        predictor.load_state_dict(resumed["predictor"])
        opt.load_state_dict(resumed["optimizer"])
        gen.set_state(resumed["generator"])
        best_state, best_step, done = resumed["best_state"], int(resumed["best_step"]), int(resumed["step"])
        best_key = (float(resumed["best_key"][0]), float(resumed["best_key"][1]))
        history = list(resumed["history"])
        log.info("GDCE: resumed from %s at step %d of %d", checkpoint, done, cfg.steps)
    for step in tqdm(range(done + 1, cfg.steps + 1), desc="GDCE", disable=not progress,
                     initial=done, total=cfg.steps):
        i_s, i_r = samp_s(), samp_r()
        bs, br = xs[i_s].to(dev), xr[i_r].to(dev)
        if cfg.flip:
            bs, br = _random_hflip(bs, gen), _random_hflip(br, gen)
        hs, hr = predictor.harmonize(bs), predictor.harmonize(br)
        ce = F.cross_entropy(classifier(hs), ys[i_s].to(dev)) + F.cross_entropy(classifier(hr), yr[i_r].to(dev))
        if cfg.recipe == "paper":
            feat = paper_feature_loss(feature_net, hs, hr, br)
            loss = paper_weighting(ce, feat, cfg.loss_lambda)
        else:  # medbench: batch-mean features, source term only, fixed weight
            f_h = pooled_features(feature_net, hs).mean(0)
            with torch.no_grad():
                f_r = pooled_features(feature_net, br).mean(0)
            feat = (f_h - f_r).abs().mean()
            loss = ce + cfg.lambda_feat * feat
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.val_every == 0 or step == cfg.steps:
            wr, vce = validation_scores(classifier, xv, yv, predictor)
            history.append({"step": step, "loss": float(loss.detach()), "ce": float(ce.detach()),
                            "feat": float(feat.detach()), "worst_recall": wr, "val_ce": vce})
            if (wr, -vce) > best_key:  # worst per-class recall, ties broken by validation loss
                best_key, best_step = (wr, -vce), step
                best_state = copy.deepcopy(predictor.state_dict())
        if checkpoint is not None and (step % epoch_steps == 0 or step % cfg.val_every == 0 or step == cfg.steps):
            save_checkpoint(checkpoint, {
                "config": _config_record(cfg), "sizes": sizes, "step": step,
                "predictor": predictor.state_dict(), "optimizer": opt.state_dict(),
                "generator": gen.get_state(), "best_state": best_state, "best_step": best_step,
                "best_key": list(best_key), "history": history, "start_params": torch.from_numpy(start_params),
            })
    predictor.load_state_dict(best_state)
    predictor.eval()
    if out_path is not None:
        save_predictor(predictor, out_path, cfg)
    log.info("GDCE: best validation worst-class recall %.3f at step %d%s", best_key[0], best_step,
             " (the starting curve: training did not improve on it)" if best_step == 0 else "")
    return GDCEResult(predictor, history, best_step, best_key[0], start_params)


def _config_record(cfg: GDCEConfig) -> dict:
    """The settings recorded in model and resume files (plain values; ``extra`` left out)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k != "extra"}


def _load_progress(path: str | Path | None, cfg: GDCEConfig, sizes: list[int]) -> dict | None:
    """The resume state in ``path`` (None: no file), refused when written for other settings or data."""
    if path is None or not Path(path).is_file():
        return None
    state = load_checkpoint(path, fix="delete it to restart the GDCE optimisation")
    if state.get("config") != _config_record(cfg) or list(state.get("sizes", [])) != sizes:
        raise InputError(f"{path} resumes a GDCE optimisation with other settings or images: delete it, "
                         "or re-run with --restart")
    return state


def save_predictor(predictor: CurvePredictor | dict[str, CurvePredictor], path: str | Path, cfg: GDCEConfig,
                   *, reference: str = "") -> Path:
    """Save one predictor, or one per source vendor (``{vendor: predictor}``), with the settings
    needed to rebuild them (a plain dict of tensors and numbers: safe to load with weights_only)."""
    meta = _config_record(cfg)
    models = predictor if isinstance(predictor, dict) else {"*": predictor}
    blob = {"vendors": {k: m.state_dict() for k, m in models.items()}, "config": meta, "reference": reference}
    return save_checkpoint(path, blob)


def load_predictors(path: str | Path) -> tuple[dict[str, CurvePredictor], str]:
    """All predictors of a model file (``{vendor: predictor}``, ``"*"`` = any vendor) and the reference vendor."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"GDCE model {p} not found: train one with `medbench harmonize fit`")
    return predictors_from_state(load_checkpoint(p, fix="train a GDCE model with `medbench harmonize fit`"), p)


def predictors_from_state(blob: dict, path: str | Path) -> tuple[dict[str, CurvePredictor], str]:
    """:func:`load_predictors` of an already loaded model file ``blob`` (read from ``path``)."""
    if "vendors" not in blob or "config" not in blob:
        raise InputError(f"{path} is not a GDCE model file written by medbench")
    c = blob["config"]
    out = {}
    for vendor, sd in blob["vendors"].items():
        model = CurvePredictor(int(c["n_iterations"]), int(c["input_size"]), tuple(c["widths"]))
        model.load_state_dict(sd)
        out[vendor] = model.eval()
    return out, str(blob.get("reference", ""))

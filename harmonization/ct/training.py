"""Training of the two-stage cross-domain denoiser and RED-CNN on simulated phantom pairs.

Patches, L1 losses, Adam: an objective the classifier engine does not have, hence its own loop,
with the shared checkpoint helpers of :mod:`medbench.runs.checkpoint`. The output folder is a :func:`medbench.runs.open_run` run folder
(``config.yaml``, ``denoise.log``, ``metrics.json``, ``units/``) whose settings are the training
config and a description of the data (sizes, doses, geometry and a content hash): a re-run with the
same settings resumes, one with any other setting is refused (every change listed; ``restart=True``
starts over). Each training stage is a unit. Within a stage the loop checkpoints atomically after
every epoch (``<stage>_last.pt``) and resumes from it; an epoch is a fixed number of iterations whose
patches are drawn from ``numpy_rng(seed, stage, epoch)``, so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from harmonization.ct.learned import (
    _adjacent,
    load_checkpoint,
    network_entry,
    network_from_state,
    projection_residual,
    residual_images,
)
from harmonization.ct.networks import REDCNN, ImageDomainNet, ProjectionNet
from harmonization.ct.phantoms import make_phantom_volume
from harmonization.ct.simulate import Geometry, LowDoseResult, noise_prior_sigma, simulate_low_dose
from medbench.errors import InputError
from medbench.runs import Run, open_run, settings_hash
from medbench.runs.checkpoint import save_checkpoint
from medbench.utils.rng import numpy_rng

log = logging.getLogger(__name__)

WORKFLOW = "denoise"  # the run folder's workflow name (log: denoise.log), shared with harmonization.ct.apply


@dataclass
class DenoiserTrainConfig:
    """Settings of the CT denoiser training loop (defaults: the small CPU model).

    Not the classifier engine's :class:`medbench.train.config.TrainConfig`: the denoisers train on
    random patches with an L1 loss for a fixed number of iterations per epoch, so they keep their own
    loop; checkpoints go through the shared :mod:`medbench.runs.checkpoint` helpers.

    Attributes:
        epochs: Epochs per stage.
        iters_per_epoch: Optimiser steps per epoch.
        batch_size: Patches per step.
        patch: Patch side (pixels for the image stage, views x detectors for the projection stage).
        lr: Adam learning rate.
        lr_drop_epoch: From this epoch on the learning rate is halved (None: constant).
        seed: Base seed (weights and patch sampling).
        proj_width, proj_depth: Projection network size.
        img_width, img_depth: Image network size.
        n_adjacent: Slices seen by the image network.
        use_prior: Feed the noise-prior channel to the projection network.
        use_projection: Use the projection stage (False: image-domain network alone).
        redcnn_width: RED-CNN channels.
    """

    epochs: int = 6
    iters_per_epoch: int = 60
    batch_size: int = 16
    patch: int = 32
    lr: float = 1e-3
    lr_drop_epoch: int | None = None
    seed: int = 0
    proj_width: int = 16
    proj_depth: int = 5
    img_width: int = 24
    img_depth: int = 6
    n_adjacent: int = 3
    use_prior: bool = True
    use_projection: bool = True
    redcnn_width: int = 24


def make_training_data(n_volumes: int, n_slices: int = 8, *, size: int = 64,
                       n0: float | Sequence[float] = 2.5e4, geometry: Geometry = Geometry(), seed: int = 0,
                       split: str = "train", workers: int | None = 1) -> list[LowDoseResult]:
    """Simulated low-/full-dose pairs from phantom volumes ``(seed, split, i)`` (disjoint per split).

    ``n0`` may be a list of photon counts: volume ``i`` is simulated at ``n0[i % len(n0)]`` (mixed-dose
    training, where the noise-prior channel tells the projection network the dose).
    """
    doses = [float(n0)] if isinstance(n0, (int, float)) else [float(v) for v in n0]
    out = []
    for i in range(n_volumes):
        vol, _ = make_phantom_volume(n_slices, size=size, seed=seed, uid=f"{split}-{i}")
        out.append(simulate_low_dose(vol, n0=doses[i % len(doses)], geometry=geometry, seed=seed,
                                     uid=f"{split}-{i}", workers=workers))
    return out


def _crop_starts(rng: np.random.Generator, shape: tuple[int, int], patch: int) -> tuple[int, int]:
    return (int(rng.integers(0, max(1, shape[0] - patch + 1))),
            int(rng.integers(0, max(1, shape[1] - patch + 1))))


def train_network(net: torch.nn.Module, sample: Callable[[np.random.Generator], tuple], *,
                  cfg: DenoiserTrainConfig, stage: str, out_dir: Path, progress: bool = True) -> list[float]:
    """Generic resumable loop: ``sample(rng) -> (inputs..., target)``; L1 loss on ``net(*inputs)``.

    Returns the per-epoch mean losses (including those of resumed epochs).
    """
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    last = out_dir / f"{stage}_last.pt"
    key = _resume_key(cfg, stage)
    history: list[float] = []
    start = 0
    if last.exists():
        ck = load_checkpoint(last)
        if ck.get("resume_key") == key:
            net.load_state_dict(ck["state"])
            opt.load_state_dict(ck["optim"])
            start, history = min(int(ck["epoch"]), cfg.epochs), list(ck["history"])[:cfg.epochs]
            log.info("resuming %s from epoch %d", stage, start)
        else:
            log.warning("%s was written with another config: starting %s afresh", last, stage)
    for epoch in range(start, cfg.epochs):
        for g in opt.param_groups:
            drop = cfg.lr_drop_epoch is not None and epoch >= cfg.lr_drop_epoch
            g["lr"] = cfg.lr * (0.5 if drop else 1.0)
        rng = numpy_rng(cfg.seed, stage, epoch)
        net.train()
        losses = []
        t0 = time.time()
        for _ in tqdm(range(cfg.iters_per_epoch), desc=f"{stage} epoch {epoch + 1}/{cfg.epochs}",
                      disable=not progress, leave=False):
            *inputs, target = sample(rng)
            loss = torch.nn.functional.l1_loss(net(*inputs), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        log.info("%s epoch %d: L1 %.5f (%.1fs)", stage, epoch + 1, history[-1], time.time() - t0)
        save_checkpoint(last, {"state": net.state_dict(), "optim": opt.state_dict(), "epoch": epoch + 1,
                               "history": history, "config": asdict(cfg), "resume_key": key})
    net.eval()
    return history


def _resume_key(cfg: DenoiserTrainConfig, stage: str) -> str:
    """Settings hash under which a stage's per-epoch checkpoint resumes: everything but the epoch
    count (epoch ``e`` depends only on the earlier epochs, the seed and ``lr_drop_epoch``, so a
    checkpoint of a shorter run is a valid start of a longer one)."""
    return settings_hash({"stage": stage, **{k: v for k, v in asdict(cfg).items() if k != "epochs"}})


def describe_data(data: list[LowDoseResult]) -> dict[str, Any]:
    """The run-folder settings of training data: sizes, doses, geometry and a content hash."""
    digest = hashlib.sha256()
    for d in data:
        for attr in ("ld_hu", "fd_hu", "sino_ld", "sino_fd"):
            digest.update(np.ascontiguousarray(getattr(d, attr), dtype=np.float32).tobytes())
    return {"n_volumes": len(data), "shape": list(np.shape(data[0].ld_hu)) if data else [],
            "n0": [float(d.n0) for d in data],
            "n_views": int(data[0].geometry.n_views) if data else None,
            "pixel_mm": float(data[0].geometry.pixel_mm) if data else None,
            "filter": data[0].geometry.filter_name if data else None,
            "sha256": digest.hexdigest()[:16]}


@contextlib.contextmanager
def _training_run(model: str, data: list[LowDoseResult], cfg: DenoiserTrainConfig, out: Path, run: Run | None,
                  restart: bool) -> Iterator[tuple[Run, dict[str, Any]]]:
    """The caller's ``run``, or a run folder opened on ``out`` with the training settings."""
    settings = {"command": "train", "model": model, "train": asdict(cfg), "data": describe_data(data)}
    if run is not None:
        yield run, settings
        return
    stages = ["projection_last.pt", "image_last.pt"] if model == "two_stage" else ["redcnn_last.pt"]
    with open_run(out, WORKFLOW, settings, outputs=[f"{model}.pt", *stages], restart=restart) as opened:
        yield opened, settings


class _Scaled(torch.nn.Module):
    """``inner(*inputs) / scale``: trains ``inner`` on a loss in ``scale`` units (state keys ``inner.*``)."""

    def __init__(self, inner: torch.nn.Module, scale: float) -> None:
        super().__init__()
        self.inner = inner
        self.scale = scale

    def forward(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        return self.inner(*inputs) / self.scale


def _stack(data: list[LowDoseResult], attr: str) -> list[np.ndarray]:
    return [np.asarray(getattr(d, attr), np.float32) for d in data]


def _check_data(data: list[LowDoseResult]) -> None:
    if not data:
        raise InputError("no training data: simulate at least one phantom volume")
    geos = {(d.geometry.n_views, d.geometry.pixel_mm, d.geometry.filter_name) for d in data}
    if len(geos) > 1:
        raise InputError("training volumes mix geometries: simulate them with one Geometry")


def _reference_n0(data: list[LowDoseResult]) -> float:
    """The default prior dose of a model: the geometric mean of the training doses."""
    doses = {float(d.n0) for d in data}
    if len(doses) == 1:
        return doses.pop()
    return float(np.exp(np.mean([np.log(d.n0) for d in data])))


def train_projection_stage(data: list[LowDoseResult], cfg: DenoiserTrainConfig, out_dir: Path, *,
                           progress: bool = True) -> tuple[ProjectionNet, list[float]]:
    """Train the projection-domain network to predict ``p_ld - p_fd`` (L1, in noise-scale units)."""
    p_ld = [s.transpose(0, 2, 1) for s in _stack(data, "sino_ld")]  # (Z, V, D)
    p_fd = [s.transpose(0, 2, 1) for s in _stack(data, "sino_fd")]
    sig = [noise_prior_sigma(p, d.n0).astype(np.float32) for p, d in zip(p_ld, data)]
    net = ProjectionNet(width=cfg.proj_width, depth=cfg.proj_depth, use_prior=cfg.use_prior, seed=cfg.seed)
    scale = net.noise_scale

    def sample(rng: np.random.Generator) -> tuple:
        xs, ss, ts = [], [], []
        for _ in range(cfg.batch_size):
            v = int(rng.integers(len(p_ld)))
            z = int(rng.integers(p_ld[v].shape[0]))
            r, c = _crop_starts(rng, p_ld[v].shape[1:], cfg.patch)
            win = (z, slice(r, r + cfg.patch), slice(c, c + cfg.patch))
            xs.append(p_ld[v][win])
            ss.append(sig[v][win])
            ts.append((p_ld[v][win] - p_fd[v][win]) / scale)
        x = torch.from_numpy(np.stack(xs))[:, None]
        s = torch.from_numpy(np.stack(ss))[:, None]
        t = torch.from_numpy(np.stack(ts))[:, None]
        return x, (s if cfg.use_prior else None), t

    hist = train_network(_Scaled(net, scale), sample, cfg=cfg, stage="projection", out_dir=out_dir, progress=progress)
    return net, hist


def train_image_stage(data: list[LowDoseResult], res_hu: list[np.ndarray] | None, cfg: DenoiserTrainConfig,
                      out_dir: Path, *, stage: str = "image", progress: bool = True
                      ) -> tuple[ImageDomainNet, list[float]]:
    """Train the image-domain network on adjacent-slice patches to predict ``ld - fd`` (L1, HU/50)."""
    ld, fd = _stack(data, "ld_hu"), _stack(data, "fd_hu")
    use_res = res_hu is not None
    net = ImageDomainNet(n_adjacent=cfg.n_adjacent, use_residual=use_res, width=cfg.img_width,
                   depth=cfg.img_depth, seed=cfg.seed)
    k = cfg.n_adjacent

    def sample(rng: np.random.Generator) -> tuple:
        xs, rs, ts = [], [], []
        for _ in range(cfg.batch_size):
            v = int(rng.integers(len(ld)))
            z = int(rng.integers(ld[v].shape[0]))
            r, c = _crop_starts(rng, ld[v].shape[1:], cfg.patch)
            win = (slice(r, r + cfg.patch), slice(c, c + cfg.patch))
            xs.append(_adjacent(ld[v], z, k)[(slice(None), *win)])
            if use_res:
                rs.append(_adjacent(res_hu[v], z, k)[(slice(None), *win)])  # type: ignore[index]
            ts.append((ld[v][z][win] - fd[v][z][win])[None])
        x = torch.from_numpy(np.stack(xs))
        r_t = torch.from_numpy(np.stack(rs)) if use_res else None
        return x, r_t, torch.from_numpy(np.stack(ts)) / 50.0

    hist = train_network(_Scaled(net, 50.0), sample, cfg=cfg, stage=stage, out_dir=out_dir, progress=progress)
    return net, hist


def _net_config(net: torch.nn.Module) -> dict[str, Any]:
    if isinstance(net, ProjectionNet):
        return {"width": net.net.body[0].out_channels, "depth": sum(isinstance(m, torch.nn.Conv2d) for m in net.net.body),
                "use_prior": net.use_prior, "p_scale": net.p_scale, "noise_scale": net.noise_scale}
    if isinstance(net, ImageDomainNet):
        return {"n_adjacent": net.n_adjacent, "use_residual": net.use_residual,
                "width": net.net.body[0].out_channels,
                "depth": sum(isinstance(m, torch.nn.Conv2d) for m in net.net.body), "hu_scale": net.hu_scale}
    if isinstance(net, REDCNN):
        return {"width": net.enc[0].out_channels, "hu_scale": net.hu_scale}
    raise TypeError(type(net).__name__)


def train_two_stage(data: list[LowDoseResult], cfg: DenoiserTrainConfig, out_dir: str | os.PathLike[str], *,
                    progress: bool = True, restart: bool = False, run: Run | None = None) -> Path:
    """Train projection stage, reconstruct its residuals, train the image stage; write ``two_stage.pt``.

    ``out_dir`` is a run folder (module docstring; ``run``: one the caller opened there). Resumes: a
    finished model is returned as is, a finished stage is loaded from its checkpoint, an interrupted
    one continues from its last epoch.

    Raises:
        InputError: ``out_dir`` holds a run with other settings (unless ``restart``).
    """
    _check_data(data)
    out = Path(out_dir)
    with _training_run("two_stage", data, cfg, out, run, restart) as (opened, settings):
        return _train_two_stage(data, cfg, out, opened, settings, progress)


def _train_two_stage(data: list[LowDoseResult], cfg: DenoiserTrainConfig, out: Path, run: Run, settings: dict[str, Any],
                     progress: bool) -> Path:
    final = out / "two_stage.pt"
    if run.unit_done("two_stage", settings, outputs=[final.name]):
        log.info("%s already trained with these settings: skipping", final)
        return final
    geo, n0 = data[0].geometry, _reference_n0(data)
    phist: list[float] = []
    proj_entry = None
    res_hu = None
    if cfg.use_projection:
        pnet, phist = train_projection_stage(data, cfg, out, progress=progress)
        run.mark_unit("projection", settings, final_l1=phist[-1] if phist else None)
        proj_entry = network_entry("projection", _net_config(pnet), pnet)
        res_hu = [residual_images(projection_residual(pnet, d.sino_ld, d.n0), geo, d.ld_hu.shape[-1])
                  for d in data]
    inet, hist = train_image_stage(data, res_hu, cfg, out, progress=progress)
    run.mark_unit("image", settings, final_l1=hist[-1] if hist else None)
    meta = {"config": asdict(cfg), "history": hist, "n_volumes": len(data),
            "size": int(data[0].ld_hu.shape[-1]), "n0": float(n0),
            "n0_train": sorted({float(d.n0) for d in data})}
    save_checkpoint(final, {"model": "two_stage", "image": network_entry("image", _net_config(inet), inet),
                            "projection": proj_entry, "geometry": asdict(geo), "n0": float(n0), "meta": meta})
    run.mark_unit("two_stage", settings)
    run.write_metrics({"image_l1": hist, **({"projection_l1": phist} if cfg.use_projection else {})})
    return final


def train_redcnn(data: list[LowDoseResult], cfg: DenoiserTrainConfig, out_dir: str | os.PathLike[str], *,
                 progress: bool = True, restart: bool = False, run: Run | None = None) -> Path:
    """Train RED-CNN (image domain, single slice) on the same pairs; write ``redcnn.pt``.

    The run folder and resume work as in :func:`train_two_stage`.
    """
    _check_data(data)
    if cfg.patch < 21:
        raise InputError(f"RED-CNN needs patches of at least 21 px (10 valid 5x5 convs), got patch={cfg.patch}")
    out = Path(out_dir)
    with _training_run("redcnn", data, cfg, out, run, restart) as (opened, settings):
        return _train_redcnn(data, cfg, out, opened, settings, progress)


def _train_redcnn(data: list[LowDoseResult], cfg: DenoiserTrainConfig, out: Path, run: Run, settings: dict[str, Any],
                  progress: bool) -> Path:
    final = out / "redcnn.pt"
    if run.unit_done("redcnn", settings, outputs=[final.name]):
        log.info("%s already trained with these settings: skipping", final)
        return final
    ld, fd = _stack(data, "ld_hu"), _stack(data, "fd_hu")
    net = REDCNN(width=cfg.redcnn_width, seed=cfg.seed)

    def sample(rng: np.random.Generator) -> tuple:
        xs, ts = [], []
        for _ in range(cfg.batch_size):
            v = int(rng.integers(len(ld)))
            z = int(rng.integers(ld[v].shape[0]))
            r, c = _crop_starts(rng, ld[v].shape[1:], cfg.patch)
            win = (z, slice(r, r + cfg.patch), slice(c, c + cfg.patch))
            xs.append(ld[v][win][None])
            ts.append(fd[v][win][None])
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ts)) / 50.0

    hist = train_network(_Scaled(net, 50.0), sample, cfg=cfg, stage="redcnn", out_dir=out, progress=progress)
    meta = {"config": asdict(cfg), "history": hist, "n0": _reference_n0(data),
            "n0_train": sorted({float(d.n0) for d in data}), "size": int(data[0].ld_hu.shape[-1]),
            "pixel_mm": float(data[0].geometry.pixel_mm)}
    save_checkpoint(final, {"model": "redcnn", "image": network_entry("redcnn", _net_config(net), net),
                            "geometry": asdict(data[0].geometry), "meta": meta})
    run.mark_unit("redcnn", settings, final_l1=hist[-1] if hist else None)
    run.write_metrics({"redcnn_l1": hist})
    return final


__all__ = ["DenoiserTrainConfig", "describe_data", "make_training_data", "train_two_stage", "train_redcnn", "train_network",
           "network_from_state"]

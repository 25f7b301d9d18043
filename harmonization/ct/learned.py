"""Inference for the learned denoisers: the two-stage cross-domain model and RED-CNN.

Checkpoints are plain dicts of tensors/numbers/strings written and read by the shared helpers of
:mod:`medbench.runs.checkpoint` (atomic ``torch.save``; ``torch.load(weights_only=True)``, never
unpickling code).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from harmonization.ct.networks import REDCNN, ImageDomainNet, ProjectionNet, build_network
from harmonization.ct.simulate import Geometry, noise_prior_sigma, reproject_volume, residual_to_hu
from medbench.errors import InputError
from medbench.runs.checkpoint import load_checkpoint as _load_checkpoint

log = logging.getLogger(__name__)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A denoiser checkpoint (:func:`medbench.runs.checkpoint.load_checkpoint` with the CT fix)."""
    return _load_checkpoint(path, fix="train one with `medbench denoise train`")


def network_from_state(entry: dict[str, Any]) -> torch.nn.Module:
    """Rebuild a network from ``{"kind", "config", "state"}``."""
    net = build_network(entry["kind"], **entry["config"])
    net.load_state_dict(entry["state"])
    return net.eval()


def network_entry(kind: str, config: dict[str, Any], net: torch.nn.Module) -> dict[str, Any]:
    """The checkpoint entry for ``net``."""
    return {"kind": kind, "config": dict(config), "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}


def _adjacent(vol: np.ndarray, z: int, k: int) -> np.ndarray:
    """``k`` slices centred on ``z`` (edge slices replicated)."""
    idx = np.clip(np.arange(z - k // 2, z - k // 2 + k), 0, vol.shape[0] - 1)
    return vol[idx]


def projection_residual(net: ProjectionNet, sino_ld: np.ndarray, n0: float) -> np.ndarray:
    """Predicted sinogram noise residuals ``(Z, D, V)`` for low-dose sinograms ``(Z, D, V)``."""
    p = torch.from_numpy(np.ascontiguousarray(np.asarray(sino_ld, np.float32).transpose(0, 2, 1)))[:, None]
    sig = torch.from_numpy(noise_prior_sigma(p.numpy(), n0).astype(np.float32))
    out = []
    with torch.no_grad():
        for i in range(p.shape[0]):
            out.append(net(p[i:i + 1], sig[i:i + 1] if net.use_prior else None)[0, 0].numpy())
    return np.stack(out).transpose(0, 2, 1)


def residual_images(sino_res: np.ndarray, geometry: Geometry, size: int) -> np.ndarray:
    """FBP of each sinogram residual, as HU differences ``(Z, size, size)``."""
    return np.stack([residual_to_hu(r, geometry, size) for r in sino_res]).astype(np.float32)


def image_stage(net: ImageDomainNet, ld_hu: np.ndarray, res_hu: np.ndarray | None, *,
                progress: bool = False) -> np.ndarray:
    """Apply the image-domain network slice by slice; returns denoised HU ``(Z, H, W)``."""
    k = net.n_adjacent
    out = np.empty_like(ld_hu, dtype=np.float32)
    with torch.no_grad():
        for z in tqdm(range(ld_hu.shape[0]), desc="image stage", disable=not progress, unit="slice"):
            x = torch.from_numpy(_adjacent(ld_hu, z, k).astype(np.float32))[None]
            r = torch.from_numpy(_adjacent(res_hu, z, k).astype(np.float32))[None] if net.use_residual else None
            out[z] = ld_hu[z] - net(x, r)[0, 0].numpy()
    return out


class TwoStageModel:
    """The two-stage cross-domain denoiser: projection stage (optional) then image stage.

    Args:
        image_net: The image-domain network.
        projection_net: The projection-domain network (``None`` for the image-only ablation).
        geometry: The acquisition geometry the model was trained with (views, pixel size).
        n0: The low-dose photon count used for the noise prior.
    """

    def __init__(self, image_net: ImageDomainNet, projection_net: ProjectionNet | None, geometry: Geometry,
                 n0: float, meta: dict[str, Any] | None = None) -> None:
        self.image_net = image_net.eval()
        self.projection_net = projection_net.eval() if projection_net is not None else None
        self.geometry = geometry
        self.n0 = float(n0)
        self.meta = meta or {}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str]) -> TwoStageModel:
        ck = load_checkpoint(path)
        if ck.get("model") != "two_stage":
            raise InputError(f"{path} is not a two-stage checkpoint (model={ck.get('model')!r})")
        proj = network_from_state(ck["projection"]) if ck.get("projection") else None
        # the recorded geometry wins; checkpoints that predate the filter field were ramp-filtered
        geo = Geometry(**{"filter_name": "ramp", **ck["geometry"]})
        return cls(network_from_state(ck["image"]), proj, geo, ck["n0"],
                   ck.get("meta", {}))

    def denoise(self, hu: np.ndarray, *, sinograms: np.ndarray | None = None, n0: float | None = None,
                pixel_mm: float | None = None, progress: bool = False) -> np.ndarray:
        """Denoise a ``(Z, H, W)`` HU volume.

        Args:
            hu: Low-dose FBP images.
            sinograms: Their low-dose sinograms ``(Z, D, V)`` when available; otherwise the images
                are re-projected (an approximation for reconstructed DICOM data).
            n0: Photon count for the noise prior (default: the training value).
            pixel_mm: Pixel size (default: the training geometry's).
            progress: Show progress bars.
        """
        vol = np.asarray(hu, dtype=np.float32)
        if self.projection_net is None:
            return image_stage(self.image_net, vol, None, progress=progress)
        geo = self.geometry if pixel_mm is None else Geometry(
            n_views=self.geometry.n_views, pixel_mm=float(pixel_mm), mu_water=self.geometry.mu_water,
            filter_name=self.geometry.filter_name)
        if sinograms is None:
            sinograms = reproject_volume(vol, geo)
        if sinograms.shape[0] != vol.shape[0] or sinograms.shape[2] != geo.n_views:
            raise InputError(f"sinograms {sinograms.shape} do not match images {vol.shape} and "
                             f"{geo.n_views} views: pass the sinograms simulated with this geometry")
        res = projection_residual(self.projection_net, sinograms, n0 or self.n0)
        res_hu = residual_images(res, geo, vol.shape[-1])
        return image_stage(self.image_net, vol, res_hu, progress=progress)


class REDCNNModel:
    """RED-CNN applied slice by slice (HU in, HU out)."""

    def __init__(self, net: REDCNN, meta: dict[str, Any] | None = None) -> None:
        self.net = net.eval()
        self.meta = meta or {}

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str]) -> REDCNNModel:
        ck = load_checkpoint(path)
        if ck.get("model") != "redcnn":
            raise InputError(f"{path} is not a RED-CNN checkpoint (model={ck.get('model')!r})")
        return cls(network_from_state(ck["image"]), ck.get("meta", {}))

    def denoise(self, hu: np.ndarray, *, progress: bool = False, **_: Any) -> np.ndarray:
        vol = np.asarray(hu, dtype=np.float32)
        if min(vol.shape[-2:]) < 21:
            raise InputError(f"RED-CNN needs slices of at least 21x21 px, got {vol.shape[-2:]}")
        out = np.empty_like(vol)
        with torch.no_grad():
            for z in tqdm(range(vol.shape[0]), desc="RED-CNN", disable=not progress, unit="slice"):
                out[z] = self.net(torch.from_numpy(vol[z])[None, None])[0, 0].numpy()
        return out


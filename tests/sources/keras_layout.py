"""Test helpers: write Keras-2-layout ``.h5`` files with h5py and compute Keras ResNet50 directly.

The functional forward below follows Keras' ``applications.ResNet50`` graph (v1 bottlenecks with the
stride on the first 1x1 conv, conv biases, BN eps 1.001e-5, ZeroPadding + valid conv/pool) using
only ``torch.nn.functional`` on the raw Keras arrays: it shares no code with the converter.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

STAGES = ((2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512))
EPS = 1.001e-5


def resnet50_keras_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Layer name -> param -> shape for Keras ResNet50 (include_top=False)."""
    layers: dict[str, dict[str, tuple[int, ...]]] = {}

    def conv(name: str, k: int, cin: int, cout: int) -> None:
        layers[name + "_conv"] = {"kernel": (k, k, cin, cout), "bias": (cout,)}
        layers[name + "_bn"] = {p: (cout,) for p in ("gamma", "beta", "moving_mean", "moving_variance")}

    conv("conv1", 7, 3, 64)
    cin = 64
    for stage, blocks, width in STAGES:
        for b in range(1, blocks + 1):
            pre = f"conv{stage}_block{b}"
            if b == 1:
                conv(pre + "_0", 1, cin, 4 * width)
            conv(pre + "_1", 1, cin, width)
            conv(pre + "_2", 3, width, width)
            conv(pre + "_3", 1, width, 4 * width)
            cin = 4 * width
    return layers


def random_weights(shapes: dict[str, dict[str, tuple[int, ...]]], seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Well-conditioned random weights (features stay O(1) through 50 layers)."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for layer, params in shapes.items():
        out[layer] = {}
        for p, shape in params.items():
            if p == "kernel":
                v = rng.normal(0, np.sqrt(1.0 / np.prod(shape[:3])), shape)
            elif p == "gamma":
                v = rng.uniform(0.2, 0.5, shape)
            elif p == "moving_variance":
                v = rng.uniform(0.5, 1.5, shape)
            else:
                v = rng.normal(0, 0.1, shape)
            out[layer][p] = v.astype(np.float32)
    return out


def write_keras2_h5(path: Path, weights: dict[str, dict[str, np.ndarray]], *, slash_names: bool = False) -> Path:
    """Write ``weights`` like Keras 2 ``model.save``: ``model_weights/<layer>/<layer>/<param>:0``.

    ``slash_names`` writes DenseNet-style Keras 2 names (``conv1/conv``) for ``conv1_conv``-like layers.
    """
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.4.0"
        f.attrs["backend"] = "tensorflow"
        root = f.create_group("model_weights")
        names = []
        for layer, params in weights.items():
            name = layer
            if slash_names and "_" in layer:
                head, _, tail = layer.rpartition("_")
                name = f"{head}/{tail}"
            names.append(name.encode())
            g = root.create_group(name)
            wnames = []
            for p, arr in params.items():
                wn = f"{name}/{p}:0"
                g.create_dataset(wn, data=arr)
                wnames.append(wn.encode())
            g.attrs["weight_names"] = wnames
        root.attrs["layer_names"] = [b"input_1"] + names
        root.create_group("input_1").attrs["weight_names"] = []
    return path


def keras_resnet50_features(x_nchw: torch.Tensor, w: dict[str, dict[str, np.ndarray]]) -> torch.Tensor:
    """Keras ResNet50 (include_top=False, pooling='avg') on an already preprocessed NCHW batch."""

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a))

    def conv(x: torch.Tensor, name: str, stride: int = 1, pad: int = 0) -> torch.Tensor:
        L = w[name + "_conv"]
        return F.conv2d(x, t(L["kernel"]).permute(3, 2, 0, 1), t(L["bias"]), stride=stride, padding=pad)

    def bn(x: torch.Tensor, name: str) -> torch.Tensor:
        L = w[name + "_bn"]
        return F.batch_norm(x, t(L["moving_mean"]), t(L["moving_variance"]), t(L["gamma"]), t(L["beta"]), False, 0.0, EPS)

    x = F.pad(x_nchw, (3, 3, 3, 3))
    x = F.relu(bn(conv(x, "conv1", 2), "conv1"))
    x = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)
    for stage, blocks, _ in STAGES:
        for b in range(1, blocks + 1):
            pre = f"conv{stage}_block{b}"
            stride = 2 if (b == 1 and stage > 2) else 1
            short = bn(conv(x, pre + "_0", stride), pre + "_0") if b == 1 else x
            y = F.relu(bn(conv(x, pre + "_1", stride), pre + "_1"))
            y = F.relu(bn(conv(y, pre + "_2", 1, 1), pre + "_2"))
            y = bn(conv(y, pre + "_3"), pre + "_3")
            x = F.relu(y + short)
    return x.mean(dim=(2, 3))

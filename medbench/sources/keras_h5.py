"""Read the weights of a Keras ``.h5`` file (Keras 2 ``model.save``/``save_weights`` or Keras 3 legacy h5).

Layouts handled:
- Keras 2 ``model.save("x.h5")``: ``model_weights/<layer>/<layer>/kernel:0`` with ``layer_names`` and
  ``weight_names`` attributes (the RadImageNet files);
- Keras 2 ``model.save_weights("x.h5")``: the same without the ``model_weights`` group;
- Keras 3 legacy h5 (``keras.saving.save_model(model, "x.h5")``): names without ``:0``.
Layer names are normalised with "/" -> "_" (Keras 2 DenseNet's ``conv1/conv`` is Keras 3's
``conv1_conv``). Nested models (a model used as a layer) are flattened by weight name.
Only numeric datasets are read; nothing is unpickled or executed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from medbench.errors import InputError

logger = logging.getLogger(__name__)

KerasWeights = dict[str, dict[str, np.ndarray]]


def _decode(names: object) -> list[str]:
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in np.asarray(names).ravel()]


def normalise_layer_name(name: str) -> str:
    """``conv1/conv`` -> ``conv1_conv`` (Keras 2 vs Keras 3 DenseNet names)."""
    return name.strip("/").replace("/", "_")


def read_keras_h5(path: str | os.PathLike[str]) -> KerasWeights:
    """Weights of a Keras ``.h5`` file as ``{layer: {param: array}}`` (param: kernel, bias, gamma, ...).

    Raises:
        InputError: Missing file, not an HDF5 file, or no Keras layer weights inside.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputError(f"Keras weights file {str(p)!r} does not exist: check the path given as weights=")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise InputError(f"{str(p)!r} is not an HDF5 (.h5) file: {exc}") from exc
    out: KerasWeights = {}
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise InputError(
                f"{str(p)!r} has no Keras 'layer_names' attribute: not a Keras model/weights .h5 file "
                f"(Keras 3 '.weights.h5' files are not supported: save with model.save('x.h5'))"
            )
        for layer in _decode(root.attrs["layer_names"]):
            group = root[layer]
            for wname in _decode(group.attrs.get("weight_names", [])):
                ds = group[wname]
                stem, _, param = wname.rpartition("/")
                param = param.split(":")[0]
                key = normalise_layer_name(stem or layer)
                if param in out.get(key, {}):
                    raise InputError(f"{str(p)!r}: weight {wname!r} appears twice; cannot map it unambiguously")
                out.setdefault(key, {})[param] = np.asarray(ds[()], dtype=np.float32)
    if not out:
        raise InputError(f"{str(p)!r} holds no layer weights (an untrained or empty Keras file?)")
    logger.debug("read %d Keras layers from %s", len(out), p)
    return out


def conv_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras conv kernel ``(kh, kw, in, out)`` -> PyTorch ``(out, in, kh, kw)``."""
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def dense_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras dense kernel ``(in, out)`` -> PyTorch ``(out, in)``."""
    return np.ascontiguousarray(kernel.T)


def bn_params(layer: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Keras BatchNormalization -> PyTorch names (``scale=False``/``center=False`` give 1/0)."""
    n = layer["moving_mean"].shape[0]
    return {
        f"{prefix}.weight": layer.get("gamma", np.ones(n, np.float32)),
        f"{prefix}.bias": layer.get("beta", np.zeros(n, np.float32)),
        f"{prefix}.running_mean": layer["moving_mean"],
        f"{prefix}.running_var": layer["moving_variance"],
    }


def conv_params(layer: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Keras Conv2D -> PyTorch ``weight`` (and ``bias`` where the layer has one)."""
    out = {f"{prefix}.weight": conv_weight(layer["kernel"])}
    if "bias" in layer:
        out[f"{prefix}.bias"] = layer["bias"]
    return out


def detect_keras_arch(weights: KerasWeights) -> str | None:
    """Which Keras application the weights come from: resnet50, densenet121, inception_v3, ..."""
    names = set(weights)
    if "conv5_block3_3_conv" in names and "conv2_block1_0_conv" in names:
        return "resnet50"
    if "conv5_block16_2_conv" in names and "pool4_conv" in names:
        return "densenet121"
    if "conv_7b" in names or "conv_7b_bn" in names:
        return "inception_resnet_v2"
    if any(n.startswith("mixed10") for n in names) or len([n for n in names if n.startswith("conv2d")]) >= 90:
        return "inception_v3"
    return None

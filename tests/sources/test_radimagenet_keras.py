"""The converter against Keras itself: Keras 3 (torch backend) builds the networks and writes .h5."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from medbench.sources import create_source  # noqa: E402
from medbench.sources.radimagenet import convert_radimagenet  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
SIZES = {"resnet50": 64, "densenet121": 64, "inception_v3": 96, "inception_resnet_v2": 96}  # Inceptions need >= 75 px


def _randomise(model, seed: int) -> None:
    """Well-conditioned random weights, BN statistics included (Keras' defaults are trivial)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            draw = {
                "gamma": lambda s: rng.uniform(0.2, 0.5, s),
                "beta": lambda s: rng.normal(0, 0.1, s),
                "moving_mean": lambda s: rng.normal(0, 0.1, s),
                "moving_variance": lambda s: rng.uniform(0.5, 1.5, s),
            }
            new = [draw[v.path.split("/")[-1]](w.shape) for v, w in zip(layer.weights, ws)]
        else:
            new = [rng.normal(0, np.sqrt(1.0 / np.prod(w.shape[:3])), w.shape) if w.ndim == 4 else rng.normal(0, 0.1, w.shape) for w in ws]
        layer.set_weights([a.astype(np.float32) for a in new])


def _to_keras2_layout(src: Path, dst: Path) -> Path:
    """Rewrite Keras 3's legacy h5 with Keras 2 weight names (``kernel:0``) as in the RadImageNet files."""
    with h5py.File(src) as fi, h5py.File(dst, "w") as fo:
        gi, go = fi["model_weights"], fo.create_group("model_weights")
        go.attrs["layer_names"] = gi.attrs["layer_names"]
        for layer in gi.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            names = []
            sub = go.create_group(layer)
            for wn in gi[layer].attrs.get("weight_names", []):
                wn = wn.decode() if isinstance(wn, bytes) else wn
                sub.create_dataset(wn + ":0", data=gi[layer][wn][()])
                names.append((wn + ":0").encode())
            sub.attrs["weight_names"] = names
    return dst


@pytest.fixture(scope="module", params=list(SIZES))
def keras_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    apps = keras.applications
    build = {
        "resnet50": apps.ResNet50,
        "densenet121": apps.DenseNet121,
        "inception_v3": apps.InceptionV3,
        "inception_resnet_v2": apps.InceptionResNetV2,
    }[request.param]
    size = SIZES[request.param]
    model = build(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
    _randomise(model, 0)
    folder = tmp_path_factory.mktemp("keras")
    path = folder / f"{request.param}.h5"
    keras.saving.save_model(model, str(path))
    return request.param, model, path


def _keras_features(model, x01: torch.Tensor, *, rescale: bool) -> np.ndarray:
    from keras.applications.imagenet_utils import preprocess_input

    nhwc = x01.permute(0, 2, 3, 1).numpy() * 255.0
    pre = preprocess_input(nhwc, mode="caffe")
    if rescale:
        pre = pre / 255.0
    return np.asarray(model.predict(pre.astype(np.float32), verbose=0))


@pytest.mark.parametrize("layout", ["keras3", "keras2"])
def test_converted_features_equal_keras(keras_model, layout: str, tmp_path: Path) -> None:
    arch, model, path = keras_model
    if layout == "keras2":
        path = _to_keras2_layout(path, tmp_path / "k2.h5")
    ours = create_source("radimagenet", arch=arch, weights=path, num_classes=0, in_chans=3)
    x = torch.rand(2, 3, SIZES[arch], SIZES[arch], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = ours.features(x).numpy()
    ref = _keras_features(model, x, rescale=True)  # default preset: caffe then 1/255
    assert np.abs(ref).max() > 0.05
    assert np.abs(feats - ref).max() < 1e-4
    if arch == "inception_v3":  # timm's own pooling (padding counted) is measurably different
        import timm

        plain = timm.create_model("inception_v3", num_classes=0).eval()
        plain.load_state_dict(ours.backbone.state_dict())
        with torch.no_grad():
            assert np.abs(plain(ours.preprocess(x)).numpy() - ref).max() > 1e-3
    caffe = create_source("radimagenet", arch=arch, weights=path, num_classes=0, in_chans=3, preprocessing="caffe")
    with torch.no_grad():
        np.testing.assert_allclose(caffe.features(x).numpy(), _keras_features(model, x, rescale=False), atol=1e-4, rtol=1e-4)


def test_grey_input_and_converted_file(keras_model, tmp_path: Path) -> None:
    arch, model, path = keras_model
    out = convert_radimagenet(path, tmp_path / f"{arch}.safetensors")
    grey = create_source("radimagenet", arch=arch, weights=out, num_classes=0, in_chans=1)
    g = torch.rand(2, 1, SIZES[arch], SIZES[arch], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        feats = grey.features(g).numpy()
    np.testing.assert_allclose(feats, _keras_features(model, g.repeat(1, 3, 1, 1), rescale=True), atol=1e-4, rtol=1e-4)
    # a fine-tuned model saved with save_source_weights comes back as the same (Keras-semantics) network
    from medbench.sources.checkpoint import save_source_weights

    saved = save_source_weights(grey, tmp_path / "ft.safetensors")
    back = create_source("checkpoint", arch=arch, weights=saved, num_classes=0, in_chans=1)
    with torch.no_grad():
        assert torch.equal(back.features(g), grey.features(g))


def _to_save_weights_layout(src: Path, dst: Path) -> Path:
    """Keras 2 ``save_weights`` layout (layers at the file's root, ``kernel:0`` names): the layout
    of ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``."""
    with h5py.File(_to_keras2_layout(src, dst.with_suffix(".k2.h5"))) as fi, h5py.File(dst, "w") as fo:
        gi = fi["model_weights"]
        for key, value in gi.attrs.items():
            fo.attrs[key] = value
        for layer in gi:
            gi.copy(gi[layer], fo, name=layer)
    return dst


def test_imagenet_from_keras_h5_equals_keras(tmp_path: Path) -> None:
    from medbench.sources.card import PREPROCESSING

    model = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg", input_shape=(64, 64, 3))
    _randomise(model, 3)
    path = tmp_path / "resnet50.h5"
    keras.saving.save_model(model, str(path))
    notop = _to_save_weights_layout(path, tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    ours = create_source("imagenet", arch="resnet50", weights=notop, num_classes=0, in_chans=3)
    assert ours.card.preprocessing is PREPROCESSING["caffe"]
    assert ours.card.preprocessing.channel_order == "BGR"
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        feats = ours.features(x).numpy()
    ref = _keras_features(model, x, rescale=False)  # Keras' ImageNet input: caffe on 0-255, no rescale
    assert np.abs(ref).max() > 0.05
    np.testing.assert_allclose(feats, ref, atol=1e-4 * max(1.0, np.abs(ref).max()), rtol=1e-4)
    with pytest.raises(Exception, match="arch"):
        create_source("imagenet", arch="densenet121", weights=notop, num_classes=0, in_chans=3)

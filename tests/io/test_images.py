"""The one raster reader ``read_image``: bit depths, 32-bit, float, palette, RGB and windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medbench.errors import InputError
from medbench.io import read_image
from medbench.io.images import parse_window


def test_read_image_bit_depths(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    g8 = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    g16 = rng.integers(0, 65536, (9, 11), dtype=np.uint16)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    Image.fromarray(g8).save(tmp_path / "g8.png")
    Image.fromarray(g16).save(tmp_path / "g16.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.tif")
    np.testing.assert_allclose(read_image(tmp_path / "g8.png"), g8 / 255.0, atol=1e-7)
    np.testing.assert_allclose(read_image(tmp_path / "g16.png"), g16 / 65535.0, atol=1e-7)
    np.testing.assert_allclose(read_image(tmp_path / "rgb.tif", grey=False), rgb / 255.0, atol=1e-7)
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0  # ITU-R BT.601
    np.testing.assert_allclose(read_image(tmp_path / "rgb.tif"), luma, atol=1e-6)
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_32bit_integer_tiff_has_no_fixed_range(tmp_path: Path) -> None:
    x = np.array([[0, 1000, 70000], [-5, 123456, 40]], dtype=np.int32)  # beyond 16 bits: no fixed range
    Image.fromarray(x).save(tmp_path / "i32.tif")
    expected = (x - (-5.0)) / (123456.0 - (-5.0))
    np.testing.assert_allclose(read_image(tmp_path / "i32.tif"), expected, atol=1e-7)
    # a user window works on the stored values: DICOM LINEAR, c=1000, w=2001
    c, w = 1000.0, 2001.0
    win = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(read_image(tmp_path / "i32.tif", window=(c, w)), win, atol=1e-7)
    with pytest.raises(InputError, match="32-bit"):
        read_image(tmp_path / "i32.tif", window="bits")


def test_float_tiff_minmax_by_default_and_clipped_with_bits(tmp_path: Path) -> None:
    x = np.array([[-1.0, 0.25, 3.0]], dtype=np.float32)
    Image.fromarray(x).save(tmp_path / "f.tif")
    np.testing.assert_allclose(read_image(tmp_path / "f.tif"), [[0.0, 1.25 / 4.0, 1.0]], atol=1e-7)
    np.testing.assert_allclose(read_image(tmp_path / "f.tif", window="bits"), [[0.0, 0.25, 1.0]], atol=1e-7)


def test_palette_image_becomes_luminance_of_its_palette_colours(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    index = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    img = Image.fromarray(index, mode="P")
    img.putpalette(palette.reshape(-1).tolist())
    img.save(tmp_path / "pal.png")
    colours = palette[index].astype(np.float64)  # index -> palette entry, by hand
    luma = (colours @ np.array([0.299, 0.587, 0.114])) / 255.0
    np.testing.assert_allclose(read_image(tmp_path / "pal.png"), luma, atol=1e-6)
    np.testing.assert_allclose(read_image(tmp_path / "pal.png", grey=False), colours / 255.0, atol=1e-7)
    assert not np.allclose(luma, index / 255.0)  # the index itself would be a different image


def test_parse_window() -> None:
    assert parse_window("40,400") == (40.0, 400.0)
    assert parse_window("auto") is None and parse_window("minmax") == "minmax"
    for bad in ("40", "a,b", (40, 0.5), "gamma"):
        with pytest.raises(InputError, match="window"):
            parse_window(bad)

"""The one raster reader: PNG/JPEG/TIFF/BMP and DICOM files to float32 in [0, 1].

:func:`read_image` is what every data path uses (``ImageDataset``, the audit's loaders). Its
``window`` decides how stored values become [0, 1]:

- ``None`` / ``"auto"``: a DICOM follows its own VOI (VOI LUT, else the first WindowCenter/Width,
  PS3.3 C.11.2.1.2; a file without one is min-max scaled); an integer raster is divided by its
  bit depth's maximum ``2**bits - 1`` (8, 16, or the TIFF's BitsPerSample); a float raster and a
  true 32-bit integer raster (no fixed range) are min-max scaled per image.
- ``"minmax"``: per-image min-max (what ``ImageDataset`` did before DICOM windows were followed).
- ``"bits"``: the full stored range ``[0, 2**BitsStored - 1]`` (keeps a vendor's look intact);
  a float raster is clipped to [0, 1].
- ``(center, width)``: the DICOM LINEAR window function (PS3.3 C.11.2.1.2.1) on the modality
  values of a DICOM (HU for CT) or on the stored values of a raster (0..255, 0..65535).

Colour and palette images become luminance (ITU-R BT.601 weights 0.299, 0.587, 0.114 on the
palette's RGB values, in float, without PIL's integer rounding) unless ``grey=False``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from medbench.errors import InputError

logger = logging.getLogger(__name__)

#: Suffixes read with Pillow; every other file is read as DICOM.
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
#: ITU-R BT.601 luma weights (R, G, B), the ones PIL's "L" conversion uses.
LUMA = np.array([0.299, 0.587, 0.114])
#: A window: None/"auto", "minmax", "bits" or (center, width).
Window = tuple[float, float] | str | None
WINDOW_NAMES = ("auto", "minmax", "bits")


def parse_window(window: Window | list[float]) -> Window:
    """Check a window and return it canonical: None, "minmax", "bits" or ``(center, width)``.

    Also accepts the text ``"C,W"`` (as given on the command line)."""
    if window is None or window == "auto":
        return None
    if isinstance(window, str):
        if window in WINDOW_NAMES:
            return window
        parts = window.split(",")
        if len(parts) != 2:
            raise InputError(f"window {window!r}: give CENTER,WIDTH (e.g. 40,400) or one of {', '.join(WINDOW_NAMES)}")
        try:
            window = (float(parts[0]), float(parts[1]))
        except ValueError:
            raise InputError(f"window {window!r}: CENTER and WIDTH must be numbers (e.g. 40,400)") from None
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(f"window must be (center, width), None or one of {WINDOW_NAMES} (got {window!r})") from None
    if not (np.isfinite(center) and np.isfinite(width) and width >= 1):
        raise InputError(f"window (center={center}, width={width}): width must be >= 1 (DICOM LINEAR window)")
    return (center, width)


def read_image(path: str | os.PathLike[str], *, window: Window = None, grey: bool = True) -> np.ndarray:
    """Read a raster (PNG/JPEG/TIFF/BMP) or DICOM image as float32 in [0, 1].

    Args:
        path: The file; rasters are recognised by suffix (:data:`RASTER_SUFFIXES`), anything
            else is read through :func:`medbench.io.dicom.read_dicom`.
        window: See the module docstring (None/"auto", "minmax", "bits", ``(center, width)``).
        grey: Colour and palette images become BT.601 luminance ``(H, W)``; False keeps
            ``(H, W, 3)`` RGB (alpha dropped).

    Returns:
        ``(H, W)`` float32 (``(H, W, 3)`` for colour with ``grey=False``). Multi-frame DICOMs
        give their first frame.

    Raises:
        InputError: Missing or unreadable file, or a window the file cannot take.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: image file not found; check the table's `path` column")
    window = parse_window(window)
    if p.suffix.lower() in RASTER_SUFFIXES:
        return _read_raster(p, window, grey)
    return _read_dicom(p, window, grey)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb[..., :3], dtype=np.float64) @ LUMA


def _window(x: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    from medbench.io.lut import window as dicom_window

    return dicom_window(x, window[0], window[1], "LINEAR")


def _minmax(x: np.ndarray) -> np.ndarray:
    from medbench.io.lut import to_unit

    return np.asarray(to_unit(x), dtype=np.float64)


def _raster_bits(img: object, arr: np.ndarray) -> int | None:
    """Bit depth of the stored integer values: a TIFF's BitsPerSample (e.g. 12 in a 16-bit
    container), else 8/16 from the dtype; None for 32-bit integers without a smaller
    BitsPerSample (such images carry no fixed range)."""
    container = 8 * arr.dtype.itemsize
    tag = getattr(img, "tag_v2", None)
    bits = tag.get(258) if tag is not None else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    if bits is not None and 0 < int(bits) < min(container, 32):
        return int(bits)
    return container if container <= 16 else None


def _read_raster(p: Path, window: Window, grey: bool) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(p) as img:
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):  # palette index -> its RGB entry
                img = img.convert("RGB")
            mode = img.mode
            arr = np.asarray(img)
            bits = _raster_bits(img, arr) if arr.dtype.kind in "iu" else None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on broken files
        raise InputError(f"{p}: image cannot be read ({exc}); is it a valid PNG/JPEG/TIFF?") from None
    if mode in ("LA", "La"):
        arr = arr[..., 0]
    elif mode in ("RGBA", "RGBa", "RGBX"):
        arr = arr[..., :3]
    kind = arr.dtype.kind
    if kind == "b":
        x = arr.astype(np.float64)
        bits = 1
    else:
        x = arr.astype(np.float64)
    if x.ndim == 3 and grey:
        x = _luma(x)
    if isinstance(window, tuple):
        y = _window(x, window)
    elif window == "minmax" or (window is None and bits is None):
        y = _minmax(x)
    elif kind == "f":  # "bits" on a float image: values are taken as already in [0, 1]
        y = np.clip(x, 0.0, 1.0)
    else:
        if bits is None:
            raise InputError(f"{p}: a 32-bit integer image has no fixed range for window='bits': "
                             "use window='minmax' or (center, width)")
        y = np.clip(x / float(2**bits - 1), 0.0, 1.0)
    return np.asarray(y, dtype=np.float32)


def _read_dicom(p: Path, window: Window, grey: bool) -> np.ndarray:
    from medbench.io.dicom import read_dicom

    img = read_dicom(p, voi=window is None)
    pix = np.asarray(img.pixels, dtype=np.float64)
    colour = bool(img.meta.get("colour"))
    if pix.ndim == (4 if colour else 3):  # multi-frame: first frame
        pix = pix[0]
    if colour and grey:
        pix = _luma(pix)
    if window is None:  # read_dicom applied the file's VOI (or min-max without one)
        y = pix
    elif window == "minmax":
        y = _minmax(pix)
    elif window == "bits":
        top = float(2 ** int(img.dataset.get("BitsStored", 16)) - 1)
        y = np.clip(pix / top, 0.0, 1.0)
    else:
        if img.meta.get("inverted"):  # VOI applies to modality values, before MONOCHROME1 inversion
            lo, hi = img.meta["inversion_range"]
            y = 1.0 - _window((lo + hi) - pix, window)
        else:
            y = _window(pix, window)
    return np.asarray(np.nan_to_num(y, nan=0.0), dtype=np.float32)

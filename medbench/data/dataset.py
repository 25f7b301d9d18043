"""Torch Datasets returning ``(image (C, H, W) float32 in [0, 1], int label, meta dict)``.

``ImageDataset`` reads files listed in a table (manifest or labels.csv: a ``path`` column and a label
column); ``ArrayDataset`` wraps images already in memory. Both work with the default collate and
``num_workers > 0``: meta values are plain ``str``/``int``/``float`` so they collate into lists and
tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from medbench.data.transforms import apply_transform, resize, set_epoch, size_hw
from medbench.errors import InputError
from medbench.io.images import Window, parse_window, read_image

Item = tuple[torch.Tensor, int, dict[str, Any]]
#: A plain ``f(image) -> image`` or a uid-aware transform (:mod:`medbench.data.transforms`).
Transform = Callable[[Any], Any]


def check_labels(table: pd.DataFrame, label_column: str) -> np.ndarray:
    """Integer labels of ``table[label_column]``; missing column/NaN/non-integers raise InputError."""
    if label_column not in table.columns:
        raise InputError(
            f"label column {label_column!r} is not in the table (columns: {', '.join(map(str, table.columns))}); "
            f"pass label_column= or merge the labels in first"
        )
    col = pd.to_numeric(table[label_column], errors="coerce")
    bad = col.isna()
    if bad.any():
        raise InputError(
            f"label column {label_column!r} has {int(bad.sum())} missing or non-numeric values "
            f"(first at row {table.index[bad.to_numpy()][0]!r}); drop or fill those rows"
        )
    vals = col.to_numpy(dtype=float)
    if not np.all(vals == np.round(vals)) or (vals < 0).any():
        raise InputError(f"label column {label_column!r} must hold non-negative integer class ids")
    return vals.astype(np.int64)


def _is_missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # lists/arrays are values, not missing
        return False


def _meta_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Row dicts with collate-friendly values: numbers stay numbers, everything else becomes str."""
    cols: dict[str, list[Any]] = {}
    for name in table.columns:
        s = table[name]
        key = str(name)
        if pd.api.types.is_bool_dtype(s):
            cols[key] = [int(v) for v in s]
        elif pd.api.types.is_integer_dtype(s) and not s.isna().any():
            cols[key] = [int(v) for v in s]
        elif pd.api.types.is_numeric_dtype(s):
            cols[key] = [float(v) for v in s.astype("float64")]
        else:
            cols[key] = ["" if _is_missing(v) else str(v) for v in s]
    n = len(table)
    if "uid" not in cols:
        if "sop_uid" in cols:
            cols["uid"] = list(cols["sop_uid"])
        elif "path" in cols:
            cols["uid"] = [Path(p).stem for p in cols["path"]]
        else:
            cols["uid"] = [str(i) for i in table.index]
    if "patient_id" not in cols:
        cols["patient_id"] = list(cols["patient_hash"]) if "patient_hash" in cols else list(cols["uid"])
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def to_chw(image: np.ndarray | torch.Tensor, *, size: int | tuple[int, int] | None, channels: int,
           pad: bool = False) -> torch.Tensor:
    """Turn an ``(H, W)``, ``(H, W, 3)`` or ``(C, H, W)`` image in [0, 1] into ``(channels, h, w)`` float32.

    ``pad=True`` keeps the aspect ratio (:func:`medbench.data.transforms.resize`); colour becomes
    grey as the channel mean (files are read as BT.601 luminance by ``read_image`` already)."""
    t = torch.as_tensor(np.asarray(image, dtype=np.float32) if not torch.is_tensor(image) else image).float()
    if t.ndim == 2:
        t = t[None]
    elif t.ndim == 3 and t.shape[-1] in (3, 4) and t.shape[0] not in (1, 3):
        t = t[..., :3].permute(2, 0, 1)
    if t.ndim != 3:
        raise InputError(f"expected a 2-D image (or colour), got shape {tuple(t.shape)}")
    t = resize(t, size, pad=pad)
    if channels == 1 and t.shape[0] != 1:
        t = t.mean(0, keepdim=True)
    elif channels == 3 and t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    elif t.shape[0] != channels:
        raise InputError(f"cannot make {channels} channels from an image with {t.shape[0]}")
    return t.clamp(0.0, 1.0).contiguous()


class ImageDataset(Dataset):
    """Images listed in a table (``path`` column + label column), preprocessed to a fixed size.

    Args:
        table: DataFrame with ``path`` and ``label_column`` (other str/number columns go to meta).
        label_column: Column holding integer class ids.
        size: Output size (int or (h, w)); ``None`` keeps the file's size.
        channels: 1 or 3 (grey replicated).
        transform: Optional ``f(image (C, H, W)) -> image`` or uid-aware pipeline
            (:mod:`medbench.data.transforms`) applied after preprocessing.
        cache: Keep preprocessed images in memory (per worker process).
        window: How stored values become [0, 1] (:func:`medbench.io.images.read_image`):
            ``None`` = the DICOM's own VOI window (min-max without one; rasters by bit depth),
            ``"minmax"`` = per image, ``"bits"`` = the full stored range (exact for files written
            by ``write_cxr_dataset``), ``(center, width)`` = the DICOM LINEAR window.
        pad: Resize keeping the aspect ratio, padding with black (default: stretch).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        *,
        label_column: str = "label",
        size: int | tuple[int, int] | None = 224,
        channels: int = 1,
        transform: Transform | None = None,
        cache: bool = False,
        window: Window = None,
        pad: bool = False,
    ) -> None:
        if not isinstance(table, pd.DataFrame):
            raise InputError(f"table must be a pandas DataFrame (got {type(table).__name__})")
        if "path" not in table.columns:
            raise InputError("table has no `path` column: pass a manifest or labels.csv table")
        if channels not in (1, 3):
            raise InputError(f"channels must be 1 or 3 (got {channels})")
        self.table = table.reset_index(drop=True)
        self.label_column = label_column
        self.labels = check_labels(self.table, label_column)
        self.size = size_hw(size)
        self.channels = int(channels)
        self.transform = transform
        self.window = parse_window(window)
        self.pad = bool(pad)
        self.cache = bool(cache)
        self._cache: dict[int, torch.Tensor] = {}
        self._meta = _meta_records(self.table)
        self.paths = [str(p) for p in self.table["path"]]

    @classmethod
    def from_folder(cls, folder: str | Path, **kwargs: Any) -> ImageDataset:
        """Dataset over a folder written by ``write_cxr_dataset`` (reads its labels.csv)."""
        from medbench.data.synthetic import read_labels

        return cls(read_labels(folder), **kwargs)

    @property
    def meta(self) -> pd.DataFrame:
        """The metadata table (one row per item)."""
        return pd.DataFrame(self._meta)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> torch.Tensor:
        """The preprocessed image ``i`` (before ``transform``)."""
        if self.cache and i in self._cache:
            return self._cache[i]
        img = to_chw(read_image(self.paths[i], window=self.window, grey=self.channels == 1), size=self.size,
                     channels=self.channels, pad=self.pad)
        if self.cache:
            self._cache[i] = img
        return img

    def __getitem__(self, i: int) -> Item:
        img = apply_transform(self.transform, self.load(int(i)), self._meta[i]["uid"])
        return img, int(self.labels[i]), dict(self._meta[i])

    def set_epoch(self, epoch: int) -> None:
        """Forward the running epoch to the transform (random steps seed by ``(seed, uid, epoch)``)."""
        set_epoch(self.transform, epoch)


class ArrayDataset(Dataset):
    """In-memory images with labels and metadata, same items as :class:`ImageDataset`.

    Args:
        images: ``(N, C, H, W)`` or ``(N, H, W)`` tensor/array in [0, 1].
        labels: ``N`` integer labels.
        meta: DataFrame with ``N`` rows (default: ``uid`` = row number as text).
        transform: Optional ``f(image (C, H, W)) -> image`` or uid-aware pipeline.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor | list[int] | pd.Series,
        meta: pd.DataFrame | None = None,
        *,
        transform: Transform | None = None,
    ) -> None:
        t = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images).float()
        if t.ndim == 3:
            t = t[:, None]
        if t.ndim != 4:
            raise InputError(f"images must be (N, C, H, W) or (N, H, W) (got shape {tuple(t.shape)})")
        if t.numel() and (not torch.isfinite(t).all() or t.min() < -1e-4 or t.max() > 1 + 1e-4):
            raise InputError("images must be finite and in [0, 1]: rescale them (e.g. medbench.io.to_unit)")
        n = t.shape[0]
        lab = labels.detach().cpu().numpy() if torch.is_tensor(labels) else labels
        lab_df = pd.DataFrame({"label": np.asarray(lab).reshape(-1)})  # a Series too: its values, not its index
        if len(lab_df) != n:
            raise InputError(f"labels has {len(lab_df)} entries but images has {n}")
        self.labels = check_labels(lab_df, "label")
        if meta is None:
            meta = pd.DataFrame({"uid": [str(i) for i in range(n)]})
        if not isinstance(meta, pd.DataFrame) or len(meta) != n:
            raise InputError(f"meta must be a DataFrame with {n} rows (one per image)")
        self.images = t.clamp(0.0, 1.0).contiguous()
        self.transform = transform
        self._table = meta.reset_index(drop=True)
        self._meta = _meta_records(self._table)

    @property
    def meta(self) -> pd.DataFrame:
        """The metadata table (one row per item)."""
        return self._table

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> Item:
        img = apply_transform(self.transform, self.images[int(i)], self._meta[i]["uid"])
        return img, int(self.labels[i]), dict(self._meta[i])

    def set_epoch(self, epoch: int) -> None:
        """Forward the running epoch to the transform (random steps seed by ``(seed, uid, epoch)``)."""
        set_epoch(self.transform, epoch)

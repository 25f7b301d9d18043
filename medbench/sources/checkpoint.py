"""Safe weights files: read state dicts (``weights_only=True`` / safetensors) and load them into models.

The ``checkpoint`` source that builds a model from such a file is in
:mod:`medbench.sources.checkpoint_source`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medbench.errors import InputError
from medbench.runs.checkpoint import save_checkpoint
from medbench.sources.card import Preprocessing
from medbench.utils.files import atomic_path

logger = logging.getLogger(__name__)

_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "state_dict_ema")
_PREFIXES = ("module.", "backbone.", "model.")
_META_PREPROCESSING = "medbench.preprocessing"
META_ARCH = "medbench.arch"
META_VARIANT = "medbench.variant"


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a plain state dict from ``.safetensors`` or a torch file, never unpickling objects.

    Torch files are read with ``torch.load(weights_only=True)``; a ``{"state_dict": ...}``-style
    container is unwrapped. Anything that is not a mapping of names to tensors is refused.

    Raises:
        InputError: Missing file, a pickle that is not a plain state dict, non-tensor values.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"weights file {str(p)!r} does not exist: check the path given as weights=")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p), device="cpu"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{str(p)!r} is not a readable .safetensors file ({exc})") from exc
    try:
        obj: Any = torch.load(str(p), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{str(p)!r} was refused by safe loading (torch.load(weights_only=True)): it is not a "
            f"plain state dict of tensors ({first}). medbench never unpickles arbitrary objects: "
            f"re-save it with torch.save(model.state_dict(), path) or as .safetensors"
        ) from exc
    if isinstance(obj, Mapping):
        for key in _CONTAINER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(torch.is_tensor(v) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise InputError(
            f"{str(p)!r} holds a {type(obj).__name__}, not a state dict (a mapping of parameter "
            f"names to tensors): save model.state_dict() instead"
        )
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)]
    if bad:
        raise InputError(
            f"{str(p)!r} is not a plain state dict: entries {bad[:5]} are not tensors; "
            f"save model.state_dict() instead"
        )
    return {str(k): v for k, v in obj.items()}


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file (empty for other files)."""
    p = Path(path)
    if p.suffix != ".safetensors" or not p.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        return dict(f.metadata() or {})


def strip_prefixes(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a ``module.``/``backbone.``/``model.`` prefix shared by every key (repeatedly)."""
    out = dict(sd)
    changed = True
    while changed and out:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                changed = True
    return out


def _classifier_prefixes(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or "fc"
    names = [names] if isinstance(names, str) else list(names)
    return [n + "." for n in names]


def load_into(
    model: nn.Module,
    sd: Mapping[str, torch.Tensor],
    *,
    source: str,
    keep_head: bool,
) -> None:
    """Load ``sd`` into ``model``, folding the first conv's channels and dropping a mismatched head.

    Args:
        model: The timm-style backbone.
        sd: State dict with the model's key layout (prefixes are stripped).
        source: File name used in error messages.
        keep_head: Load the classifier weights too (``False`` leaves the new head as initialised).

    Raises:
        InputError: Missing or unexpected keys (a few are listed) or shapes that cannot be adapted.
    """
    from timm.models import adapt_input_conv

    sd = strip_prefixes(sd)
    target = model.state_dict()
    heads = _classifier_prefixes(model)
    out: dict[str, torch.Tensor] = {}
    bad_shapes: list[str] = []
    for k, v in sd.items():
        is_head = any(k.startswith(h) for h in heads)
        if is_head and (not keep_head or k not in target or v.shape != target[k].shape):
            continue  # a new head (other size, or none) keeps its own initialisation
        if k not in target:
            out[k] = v
            continue
        want = target[k].shape
        if v.shape != want:
            if v.ndim == 4 and len(want) == 4 and v.shape[0] == want[0] and v.shape[2:] == want[2:]:
                v = adapt_input_conv(int(want[1]), v)
                logger.info("%s: adapted %s from %d to %d input channels", source, k, sd[k].shape[1], want[1])
            else:
                bad_shapes.append(f"{k} {tuple(v.shape)} vs {tuple(want)}")
                continue
        out[k] = v.to(target[k].dtype)
    unexpected = sorted(set(out) - set(target))
    missing = sorted(
        k
        for k in set(target) - set(out)
        if not k.endswith("num_batches_tracked") and not any(k.startswith(h) for h in heads)
    )
    if bad_shapes or unexpected or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:4]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:4]})")
        if bad_shapes:
            parts.append(f"{len(bad_shapes)} shape mismatches (e.g. {bad_shapes[:3]})")
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", type(model).__name__)
        raise InputError(
            f"{source!r} does not match architecture {arch!r}: " + "; ".join(parts)
            + ". Pass the arch= the weights were saved from, or a state dict in timm's key layout"
        )
    model.load_state_dict(out, strict=False)


def save_source_weights(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Save a SourceModel's (or any module's) state dict; ``.safetensors`` also records the preprocessing.

    The file is written atomically and can be read back with ``create_source("checkpoint", ...)``.
    """
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict[str, str] = {}
    card = getattr(model, "card", None)
    if card is not None:
        meta[_META_PREPROCESSING] = preprocessing_to_json(card.preprocessing)
        cfg = getattr(getattr(model, "backbone", None), "pretrained_cfg", None) or {}
        if cfg.get("architecture"):
            meta[META_ARCH] = str(cfg["architecture"])
        if cfg.get("variant"):
            meta[META_VARIANT] = str(cfg["variant"])
    return write_state_dict(sd, path, metadata=meta)


def write_state_dict(
    sd: Mapping[str, torch.Tensor], path: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``sd`` atomically as ``.safetensors`` (with string ``metadata``) or, for any other
    suffix, with the shared checkpoint writer (:func:`medbench.runs.checkpoint.save_checkpoint`)."""
    p = Path(path)
    if p.suffix != ".safetensors":
        return save_checkpoint(p, dict(sd))
    from safetensors.torch import save_file

    with atomic_path(p) as tmp:
        save_file(dict(sd), str(tmp), metadata=dict(metadata or {}))
    return p


def preprocessing_to_json(p: Preprocessing) -> str:
    """Serialise a preprocessing preset for a weights file's metadata."""
    return json.dumps(dataclasses.asdict(p))


def preprocessing_from_file(path: str | os.PathLike[str]) -> Preprocessing | None:
    """The preprocessing recorded by :func:`save_source_weights` in a ``.safetensors`` file, if any."""
    raw = read_metadata(path).get(_META_PREPROCESSING)
    if not raw:
        return None
    try:
        d = json.loads(raw)
        return Preprocessing(
            name=str(d["name"]),
            input_range=tuple(float(v) for v in d["input_range"]),  # type: ignore[arg-type]
            channel_order=str(d["channel_order"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            note=str(d.get("note", "")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("%s: ignoring unreadable preprocessing metadata (%s)", path, exc)
        return None


__all__ = [
    "read_state_dict",
    "read_metadata",
    "load_into",
    "save_source_weights",
    "write_state_dict",
    "strip_prefixes",
]

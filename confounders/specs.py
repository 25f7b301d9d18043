"""Confounder specs of an audit: a registered name, or a dict with ``name`` plus parameters
(``label`` for display, ``baseline`` for the artifact put on every other image)."""

from __future__ import annotations

from typing import Any

from confounders.base import (
    CONFOUNDERS,
    PRESETS,
    Confounder,
    create_confounder,
    load_builtin_confounders,
)
from confounders.sampled import SAMPLED
from medbench.errors import InputError


def spec_label(spec: Any) -> str:
    """Display label of a source/confounder spec (its ``label``, else its name)."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict) and "name" in spec:
        return str(spec.get("label", spec["name"]))
    raise InputError(f"a source/confounder must be a name or a dict with 'name'; got {spec!r}")


def spec_kwargs(spec: Any) -> tuple[str, dict[str, Any]]:
    """(registered name, keyword arguments) of a spec: a name or a dict with ``name``."""
    if isinstance(spec, str):
        return spec, {}
    kw = {k: v for k, v in spec.items() if k not in ("name", "label", "baseline")}
    return str(spec["name"]), kw


#: Presets whose protocol puts a reference version of the artifact on every other image.
PAPER_BASELINES: dict[str, str] = {"paper-noise": "paper-noise-reference"}


def baseline_spec(spec: Any) -> Any:
    """The artifact applied to the images *without* the confounder, if any: a dict spec's
    ``baseline`` entry, else the paper's protocol (:data:`PAPER_BASELINES`: all other images get
    N0 = 2e7 noise when the confounded ones get 1.5e7)."""
    if isinstance(spec, dict) and "baseline" in spec:
        return spec["baseline"]
    return PAPER_BASELINES.get(spec_kwargs(spec)[0])


def build_confounder(spec: Any, *, seed: int = 0) -> Confounder:
    name, kw = spec_kwargs(spec)
    kw.setdefault("seed", seed)
    if "position" in kw:
        kw["position"] = tuple(kw["position"])
    return create_confounder(name, **kw)


def is_sampled(spec: Any) -> bool:
    """True for a sampled (patient-level) confounder such as "sex" (see :mod:`confounders.sampled`)."""
    load_builtin_confounders()
    name = spec_kwargs(spec)[0]
    return name in SAMPLED and name not in CONFOUNDERS and name not in PRESETS

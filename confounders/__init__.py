"""Confounders: the MICCAT taxonomy, synthetic and sampled confounders, and the robustness audit.

The public names load lazily (importing ``confounders`` stays cheap for the CLI):

- :func:`create_confounder`, :data:`CONFOUNDERS`, :data:`PRESETS`, :class:`Confounder`,
  :func:`register_confounder` (``confounders.base`` / ``confounders.synthetic``);
- :func:`build_prevalence_splits`, :data:`SAMPLED` (``confounders.sampled``);
- :class:`AuditConfig`, :func:`run_audit`, :func:`run_demo_audit` (``confounders.audit``);
- :data:`MICCAT` (``confounders.taxonomy``).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CONFOUNDERS": "confounders.synthetic",
    "PRESETS": "confounders.synthetic",
    "Confounder": "confounders.synthetic",
    "create_confounder": "confounders.synthetic",
    "register_confounder": "confounders.synthetic",
    "SAMPLED": "confounders.sampled",
    "build_prevalence_splits": "confounders.sampled",
    "AuditConfig": "confounders.audit",
    "run_audit": "confounders.audit",
    "run_demo_audit": "confounders.demo_audit",
    "MICCAT": "confounders.taxonomy",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'confounders' has no attribute {name!r}")

"""The small audit that ``medbench demo`` runs on the embedded synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confounders.audit import AuditConfig, AuditResult, run_audit

DEMO_SOURCES: tuple[Any, ...] = (
    {"name": "random", "arch": "resnet10t", "label": "random-init (resnet10t)"},
    {"name": "efficientnet-lite0-imagenet", "label": "imagenet-lite0"},
)
DEMO_TAG: dict[str, Any] = {"name": "tag", "label": "tag-R", "text": "R", "size": 256.0,
                            "position": [120.0, 120.0], "font": "sans-bold"}


def run_demo_audit(out_dir: str | Path, *, n: int = 300, size: int = 64,
                   ps: tuple[float, ...] = (0.0, 0.5, 1.0), sources: tuple[Any, ...] = DEMO_SOURCES,
                   splits: int = 1, epochs: int = 10, confounder: Any = None, device: str = "auto",
                   report: bool = True, batch_size: int = 16, restart: bool = False) -> AuditResult:
    """A small audit for the demo on the embedded synthetic data.

    One confounder (an enlarged bold "R" tag, legible at ``size`` px; the paper's preset would be a
    4-px glyph at 64 px), a few p values, two sources with the same architecture (EfficientNet-Lite0
    random init (the smaller ResNet-10-T, see :data:`DEMO_SOURCES`) vs genuine ImageNet weights, both
    offline), ``splits`` patient-grouped split(s).
    Resumable like any audit: a rerun into the same folder only reports; one with other data or
    training settings is refused unless ``restart`` (see :func:`run_audit`).
    """
    cfg = AuditConfig(sources=list(sources), confounders=[confounder or DEMO_TAG], ps=list(ps), splits=splits,
                      data={"kind": "synthetic", "n": n, "size": size, "seed": 0},
                      train={"epochs": epochs, "batch_size": batch_size, "device": device}, n_boot=1000)
    return run_audit(cfg, out_dir, report=report, restart=restart)

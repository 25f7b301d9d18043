"""Named audit presets: ``source-matters`` runs Juodelyte et al. (2024)'s protocol.

The preset compares like with like: Keras ResNet50 v1 with ImageNet weights (a Keras
``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``), with RadImageNet weights
(``RadImageNet-ResNet50_notop.h5``) and randomly initialised (``keras_resnet50``: the same
network, timm's initialisation, not Keras' glorot-uniform). Recipe as the authors'
``fine-tuning.py``: Adam 1e-3, 30 epochs, batch 256, rotation/shift/shear/zoom augmentation,
dropout 0.5, the best validation loss kept (their early-stopping patience of 30 never fires in 30
epochs), one fixed test set and 5 train/val splits. The image size is not in their repository;
the preset uses 224 px (Keras ResNet50's default input); ``--size`` changes it.

Split files: ``--csv-dir`` is the authors' ``data/chest14/`` folder (``train_foldK.csv``,
``val_foldK.csv``, ``test.csv``). The sex arm reads their ``gender/`` folder inside it when present
(``F_0/`` ... ``F_100/`` with ``train_foldK.csv``/``val_foldK.csv``, and ``gender/test.csv``, the
o.o.d. test set: male positives + female negatives); ``data: {sex_csv_dir: ...}`` in a config
points elsewhere. Their sex experiment has no i.i.d. or clean test set, so those AUCs are empty.
"""

from __future__ import annotations

from typing import Any

from medbench.errors import InputError

#: o.o.d. AUC read off the paper's figure (NIH ChestX-ray14, tag "R"), by p and source label.
PAPER_FIGURE: dict[tuple[str, float], dict[str, float]] = {
    ("paper-tag", 0.5): {"ImageNet": 0.38, "RadImageNet": 0.72, "random": 0.69},
    ("paper-tag", 0.8): {"ImageNet": 0.05, "RadImageNet": 0.62, "random": 0.68},
}

SOURCE_MATTERS: dict[str, Any] = {
    "sources": [
        {"name": "imagenet", "arch": "resnet50", "weights": None, "label": "ImageNet"},
        {"name": "radimagenet", "arch": "resnet50", "weights": None, "label": "RadImageNet"},
        {"name": "random", "arch": "keras_resnet50", "label": "random"},
    ],
    "confounders": ["paper-tag", "paper-lowpass", "paper-noise", "sex"],
    "ps": [0.0, 0.1, 0.2, 0.5, 0.8, 1.0],
    "splits": 5,
    "data": {"kind": "nih", "size": 224},
    "train": {"epochs": 30, "batch_size": 256, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0,
              "schedule": "constant", "patience": None},
    "drop_rate": 0.5,
    "augment": "keras",
    "n_boot": 1000,
    "n_perm": 10000,
    "preset": "source-matters",
}

AUDIT_PRESETS: dict[str, dict[str, Any]] = {"source-matters": SOURCE_MATTERS}


def audit_preset(name: str, *, imagenet_weights: str | None = None,
                 radimagenet_weights: str | None = None) -> dict[str, Any]:
    """A copy of the preset's config dict with the weight files filled in."""
    import copy

    if name not in AUDIT_PRESETS:
        from medbench.registry import did_you_mean

        raise InputError(f"audit preset {name!r}: {did_you_mean(name, list(AUDIT_PRESETS))}")
    cfg = copy.deepcopy(AUDIT_PRESETS[name])
    files = {"imagenet": imagenet_weights, "radimagenet": radimagenet_weights}
    for src in cfg["sources"]:
        if src["name"] in files:
            src["weights"] = None if files[src["name"]] is None else str(files[src["name"]])
    return cfg


def missing_weights(sources: list[Any]) -> list[str]:
    """Labels of preset sources still lacking their weight file."""
    return [s.get("label", s["name"]) for s in sources
            if isinstance(s, dict) and "weights" in s and s["weights"] is None]


def paper_comparison(summary: Any) -> Any:
    """Rows ``confounder, prevalence, source, paper_auc_ood, auc_ood, auc_ood_keras, n_splits`` for the
    figure values of :data:`PAPER_FIGURE` whose source label and p the audit ran."""
    import pandas as pd

    from confounders.audit_stats import with_prevalence

    summary = with_prevalence(summary)
    rows = []
    for (conf, p), by_source in PAPER_FIGURE.items():
        for src, paper in by_source.items():
            g = summary[(summary.confounder == conf) & (summary.source == src) & ((summary.prevalence - p).abs() < 1e-9)]
            if g.empty:
                continue
            r = g.iloc[0]
            rows.append({"confounder": conf, "prevalence": p, "source": src, "paper_auc_ood": paper,
                         "auc_ood": float(r.auc_ood),
                         "auc_ood_keras": float(r.get("auc_ood_keras", float("nan"))),
                         "n_splits": int(r.n_splits)})
    return pd.DataFrame(rows, columns=["confounder", "prevalence", "source", "paper_auc_ood", "auc_ood",
                                       "auc_ood_keras", "n_splits"])

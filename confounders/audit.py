"""The robustness audit: sources x confounders x strength p x splits, resumable per unit.

Protocol (Source Matters, Juodelyte et al. 2024): for each unit the artifact is put on a fraction
``p`` of the **positives** of the train, validation and i.i.d. test sets; the o.o.d. test set has
the artifact on **all negatives** and no positive; the clean test set has none. The model is
fine-tuned on the confounded training set (best validation loss kept) and AUC is measured on the
three test sets; ``gap = AUC_iid - AUC_ood``. Which positives carry the artifact is decided per uid
(rank of a uniform number drawn from ``(seed, confounder, uid)``), so the confounded set at a larger
``p`` contains the one at a smaller ``p``.

Each unit writes its folder ``<out>/units/<unit>/`` (the name carries source, confounder,
``p<value>`` and split): ``sets.parquet`` (``uid, patient_id, label, set, confounded``, plus ``sex``
when the data has it and the sampled column for sampled confounders; ``set`` is one of
:data:`SET_NAMES`), ``predictions.parquet`` (``uid, set, label, prob`` for the three test sets; the
row's AUCs are recomputable from it) and ``row.json``; then ``units/<unit>.json`` records it finished
with its settings hash (:func:`medbench.runs.open_run`). A rerun skips finished units; which
setting changes are refused and which only add units is in :mod:`confounders.audit_folder`.
``results.csv``, ``summary.csv``, ``comparisons.csv``, ``metrics.json`` and ``report.html`` are
rebuilt from the current config's units at the end.

Statistics: AUCs with patient-level bootstrap CIs (``n_boot``, default 1,000), Keras' one-hot AUC
as an extra column (``auc_*_keras``, the paper's numbers), and the source comparison of
:mod:`confounders.audit_stats` (the authors' unpaired permutation t-test with ``n_perm``
relabellings as the headline, the paired sign-flip test as an extra).

Example:
    >>> cfg = AuditConfig(sources=["random"], confounders=["paper-tag"], ps=[0, 0.5, 1], splits=2)
    >>> result = run_audit(cfg, "runs/audit")

A YAML config for ``medbench audit -c audit.yaml -o runs/audit`` (flags override it)::

    sources:
      - {name: imagenet, arch: resnet50, label: ImageNet}
      - {name: radimagenet, weights: RadImageNet-ResNet50_notop.h5, label: RadImageNet}
      - {name: random, arch: resnet50, label: random}
    confounders: [paper-tag, paper-lowpass, paper-noise, sex]
    ps: [0, 0.1, 0.2, 0.5, 0.8, 1]
    splits: 5
    data: {kind: nih, csv_dir: splits/, image_root: images/, size: 512, positive: 1}
    train: {epochs: 50, batch_size: 32, lr: 0.001, optimizer: adam, patience: 10}
    drop_rate: 0.5
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from confounders.audit_data import (
    AuditData,
    authors_sampled_sets,
    load_dicom_folder,
    load_nih_splits,
    load_synthetic,
)
from confounders.audit_folder import (
    UNIT_FILES,
    collect_rows,
    open_audit_run,
    record_config,
    resolved_config,
    run_settings,
    unit_dir,
    unit_settings,
    write_unit,
)
from confounders.audit_stats import compare_sources, summarise
from confounders.base import check_fraction
from confounders.injection import ARTIFACT_SCALES, inject
from confounders.specs import (
    baseline_spec,
    build_confounder,
    is_sampled,
    spec_kwargs,
    spec_label,
)
from medbench.errors import InputError
from medbench.registry import did_you_mean
from medbench.runs import settings_hash
from medbench.utils.rng import numpy_rng

logger = logging.getLogger(__name__)

DEFAULT_TRAIN: dict[str, Any] = {
    "epochs": 5, "batch_size": 32, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0,
    "schedule": "constant", "patience": None, "device": "auto", "progress": False,
}
DATA_KINDS = ("synthetic", "dicom", "nih")


@dataclass
class AuditConfig:
    """What to audit. Sources/confounders are names or dicts (``{"name": ..., "label": ..., **kw}``).

    Attributes:
        sources: Source names for ``medbench.sources.create_source`` (dict entries pass ``arch``,
            ``weights``, ...).
        confounders: Confounder or preset names for :func:`create_confounder` (dicts pass params).
        ps: Strengths: fraction of positives carrying the artifact.
        splits: Number of splits to run.
        data: ``{"kind": "synthetic", "n", "size", "seed"}``, ``{"kind": "dicom", "manifest",
            "labels", "size", "positive"}`` or ``{"kind": "nih", "csv_dir", "image_root", "size",
            "positive"}``. Synthetic/DICOM data also take ``scheme`` ("fixed-test", the authors':
            one fixed test set + GroupShuffleSplit train/val; "kfold": patient k-fold, whose
            test set changes per split; "stratified-kfold": scikit-learn StratifiedGroupKFold),
            ``val_fraction`` (0.15) and ``test_fraction`` (0.25);
            NIH data use the split files (the authors' ``train_foldK.csv``/``test.csv``; their
            sex files ``gender/F_<100p>/`` from ``sex_csv_dir``, default ``<csv_dir>/gender``).
            DICOM and NIH data take ``window``: ``(center, width)`` / ``"C,W"``, ``"minmax"``,
            ``"bits"``, or none (default: each DICOM's own VOI window; PNGs by bit depth).
        train: ``TrainConfig`` fields (defaults: :data:`DEFAULT_TRAIN`).
        drop_rate: Dropout before the new head (the paper: 0.5).
        seed: Seeds the artifact selection and (plus the split index) training.
        n_boot: Bootstrap resamples of the AUC CIs (patient-level; >= 1,000 keeps the CI bounds
            stable to about 0.01 between seeds).
        n_perm: Relabellings of the source comparison (the authors: 10,000; exact when fewer exist).
        alpha: Significance level the report uses and checks the tests' p-value floor against.
        keep_checkpoints: Keep each unit's training folder (default: removed once its row is saved).
        augment: Training augmentation (``medbench.data.keras_augment``): "keras" is the authors'
            rotation/shift/shear/zoom recipe; None trains without (the quick default).
        artifact_scale: "native" (the authors: artifacts made at 1024 px, then resized with the
            image) or "working" (scaled to the working size); see :func:`inject`.
        preset: The audit preset this config came from (``source-matters`` adds the paper's
            figure values to the report; see :mod:`confounders.audit_presets`).
    """

    sources: list[Any] = field(default_factory=lambda: ["random"])
    confounders: list[Any] = field(default_factory=lambda: ["paper-tag"])
    ps: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.5, 0.8, 1.0])
    splits: int = 5
    data: dict[str, Any] = field(default_factory=lambda: {"kind": "synthetic", "n": 400, "size": 64, "seed": 0})
    train: dict[str, Any] = field(default_factory=dict)
    drop_rate: float = 0.5
    seed: int = 0
    n_boot: int = 1000
    n_perm: int = 10000
    alpha: float = 0.05
    keep_checkpoints: bool = False
    augment: str | None = None
    artifact_scale: str = "native"
    preset: str | None = None

    def __post_init__(self) -> None:
        if not self.sources or not self.confounders or not self.ps:
            raise InputError("an audit needs at least one source, one confounder and one p")
        self.ps = sorted({check_fraction(p, "p") for p in self.ps})
        if int(self.splits) < 1:
            raise InputError(f"splits must be >= 1; got {self.splits}")
        if int(self.n_boot) < 0 or int(self.n_perm) < 1:
            raise InputError(f"n_boot must be >= 0 and n_perm >= 1; got {self.n_boot}, {self.n_perm}")
        if not 0.0 < float(self.alpha) < 1.0:
            raise InputError(f"alpha must lie in (0, 1); got {self.alpha}")
        from medbench.data.keras_augment import create_augmentation

        create_augmentation(self.augment)  # fail early on an unknown name
        if self.artifact_scale not in ARTIFACT_SCALES:
            raise InputError(f"artifact_scale {self.artifact_scale!r}: "
                             f"{did_you_mean(str(self.artifact_scale), ARTIFACT_SCALES)}")
        kind = self.data.get("kind", "synthetic")
        from medbench.io.images import parse_window

        parse_window(self.data.get("window"))  # fail early on a bad window
        if kind not in DATA_KINDS:
            raise InputError(f"data kind {kind!r}: {did_you_mean(str(kind), DATA_KINDS)}")
        labels = [spec_label(s) for s in self.sources]
        if len(set(labels)) != len(labels):
            raise InputError(f"source labels must be unique; got {labels} (give dict entries a 'label')")
        for c in self.confounders:  # fail early on unknown names/bad params
            if not is_sampled(c):
                build_confounder(c, seed=self.seed)
                if (base := baseline_spec(c)) is not None:
                    build_confounder(base, seed=self.seed)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditConfig:
        names = [f.name for f in dataclasses.fields(cls)]
        for k in d:
            if k not in names:
                raise InputError(f"unknown audit config key {k!r}: {did_you_mean(k, names)}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path: str | Path) -> AuditConfig:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise InputError(f"audit config {p} does not exist")
        return cls.from_dict(yaml.safe_load(p.read_text()) or {})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def train_dict(self) -> dict[str, Any]:
        return {**DEFAULT_TRAIN, **self.train}


def select_confounded(meta: pd.DataFrame, p: float, *, key: str, seed: int) -> np.ndarray:
    """Boolean mask: the ``round(p * n_pos)`` positives of lowest ``u(seed, key, uid)`` (nested in p)."""
    pos = np.flatnonzero(meta["label"].to_numpy() == 1)
    k = int(round(p * len(pos)))
    mask = np.zeros(len(meta), dtype=bool)
    if k:
        u = np.array([numpy_rng(seed, "select", key, uid).random() for uid in meta["uid"].iloc[pos]])
        mask[pos[np.argsort(u, kind="stable")[:k]]] = True
    return mask


#: How artifacts meet the working size: "native" (default, as the authors: the artifact is made at
#: the confounder's ``ref_size``, 1024 px, and resized with the image) or "working" (medbench's
#: older behaviour: geometry scaled to the working size, filters relative to its Nyquist).
@dataclass
class Unit:
    source: Any
    confounder: Any
    p: float
    split: int

    @property
    def uid(self) -> str:
        return f"{spec_label(self.source)}__{spec_label(self.confounder)}__p{self.p:.3f}__s{self.split}"


def units(cfg: AuditConfig, n_splits: int) -> list[Unit]:
    """All units in run order (split-major, so early splits of every curve finish first)."""
    return [Unit(s, c, p, k) for k in range(n_splits) for c in cfg.confounders for s in cfg.sources
            for p in cfg.ps]


def load_data(data_cfg: dict[str, Any], *, splits: int, seed: int = 0) -> AuditData:
    """Dispatch on ``data_cfg["kind"]`` to the loaders of :mod:`confounders.audit_data`."""
    d = dict(data_cfg)
    kind = d.pop("kind", "synthetic")
    scheme = d.get("scheme", "fixed-test")
    split_kw = {"scheme": scheme, "val_fraction": d.get("val_fraction", 0.15),
                "test_fraction": d.get("test_fraction", 0.25),
                "splits": max(5, splits) if scheme in ("kfold", "stratified-kfold") else max(1, splits)}
    if kind == "synthetic":
        return load_synthetic(n=d.get("n", 400), size=d.get("size", 64), seed=d.get("seed", seed), **split_kw)
    if kind == "dicom":
        for k in ("manifest", "labels"):
            if k not in d:
                raise InputError(f"data kind 'dicom' needs {k!r} (a manifest from `medbench ingest` and a label table)")
        return load_dicom_folder(d["manifest"], d["labels"], size=d.get("size", 128),
                                 positive=d.get("positive", 1), label_column=d.get("label_column", "label"),
                                 seed=seed, window=d.get("window"), **split_kw)
    if "csv_dir" not in d:
        raise InputError("data kind 'nih' needs 'csv_dir' (the authors' train_foldK.csv/val_foldK.csv/test.csv)")
    return load_nih_splits(d["csv_dir"], d.get("image_root"), size=d.get("size", 128),
                           positive=d.get("positive"), max_splits=splits, window=d.get("window"),
                           sex_csv_dir=d.get("sex_csv_dir"))


#: Keras' default number of thresholds of ``tf.keras.metrics.AUC`` (the paper's AUC).
KERAS_THRESHOLDS = 200


def _auc_block(prefix: str, df: pd.DataFrame, n_boot: int, seed: int) -> dict[str, float]:
    from medbench.eval.metrics import auc, bootstrap_auc_ci, keras_auc

    y, prob = df["label"].to_numpy(), df["prob"].to_numpy()
    if len(np.unique(y)) < 2:
        nan = float("nan")
        return {f"auc_{prefix}": nan, f"auc_{prefix}_lo": nan, f"auc_{prefix}_hi": nan, f"auc_{prefix}_keras": nan}
    out = {f"auc_{prefix}": float(auc(y, prob))}
    # the 2-way softmax as one-hot outputs, flattened (prob of class 0 is 1 - prob of class 1)
    out[f"auc_{prefix}_keras"] = float(keras_auc(y.astype(int), np.column_stack([1.0 - prob, prob]),
                                                 num_thresholds=KERAS_THRESHOLDS))
    if n_boot > 0:
        ci = bootstrap_auc_ci(y, prob, groups=df["patient_id"].astype(str).to_numpy(), n_boot=n_boot, seed=seed)
        out.update({f"auc_{prefix}_lo": float(ci.lo), f"auc_{prefix}_hi": float(ci.hi)})
    return out


def unit_sets(unit: Unit, cfg: AuditConfig, data: AuditData) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Row positions of the unit's train/val/test(i.i.d.)/ood/clean sets and, per set, which rows
    carry the artifact (all False for sampled confounders, whose association comes from sampling)."""
    if is_sampled(unit.confounder):
        return _sampled_sets(unit, cfg, data)
    idx = data.splits[unit.split]
    key = spec_label(unit.confounder)
    rows = {"train": idx["train"], "val": idx["val"], "test": idx["test"], "ood": idx["test"], "clean": idx["test"]}
    masks = {s: select_confounded(data.meta.iloc[idx[s]], unit.p, key=key, seed=cfg.seed)
             for s in ("train", "val", "test")}
    masks["ood"] = data.meta["label"].to_numpy()[idx["test"]] == 0
    masks["clean"] = np.zeros(len(idx["test"]), dtype=bool)
    return rows, masks


def _sampled_column_group(spec: Any) -> tuple[str, Any]:
    from confounders.sampled import SAMPLED

    name, kw = spec_kwargs(spec)
    sc = SAMPLED.get(name)
    column, group = kw.get("column", sc.column), kw.get("group", sc.group)
    if group is None:
        raise InputError(f"sampled confounder {name!r} needs group= (the value of {column!r} that carries p)")
    return column, group


def _sampled_sets(unit: Unit, cfg: AuditConfig, data: AuditData) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    from confounders.sampled import add_age_band, build_prevalence_splits

    name, kw = spec_kwargs(unit.confounder)
    authors = authors_sampled_sets(data, name, unit.p, unit.split)
    if authors is not None:  # the authors' split files (e.g. Source Matters' gender/F_<100p>/)
        return authors, {s: np.zeros(len(r), dtype=bool) for s, r in authors.items()}
    column, group = _sampled_column_group(unit.confounder)
    kw.pop("column", None)
    kw.pop("group", None)
    meta = data.meta
    if column == "age_band" and column not in meta.columns:
        meta = add_age_band(meta)
    k = max(5, int(cfg.splits))
    common = dict(column=column, group=group, label_column="label", positive=1, negative=0,
                  n_splits=k, seed=cfg.seed, **kw)
    sp = build_prevalence_splits(meta, p=unit.p, **common)[unit.split]
    rows = {"train": sp.train.index.to_numpy(), "val": sp.val.index.to_numpy(),
            "test": sp.test_iid.index.to_numpy(), "ood": sp.test_ood.index.to_numpy(),
            "clean": sp.test_clean.index.to_numpy()}
    return rows, {s: np.zeros(len(r), dtype=bool) for s, r in rows.items()}


#: Names of the unit's sets in ``sets.parquet``/``predictions.parquet`` (keys of :func:`unit_sets`).
SET_NAMES: dict[str, str] = {"train": "train", "val": "val", "test": "test_iid", "ood": "test_ood",
                             "clean": "test_clean"}


def unit_plan(unit: Unit, cfg: AuditConfig, data: AuditData, *, batch_size: int = 0
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`unit_sets` as trained: without the last training image when it would form a batch
    of one (it breaks BatchNorm in training mode)."""
    rows, masks = unit_sets(unit, cfg, data)
    if batch_size and len(rows["train"]) % batch_size == 1 and len(rows["train"]) > 1:
        logger.info("unit %s: dropping 1 of %d training images (last batch of 1)", unit.uid, len(rows["train"]))
        rows["train"], masks["train"] = rows["train"][:-1], masks["train"][:-1]
    return rows, masks


def sets_table(unit: Unit, data: AuditData, rows: dict[str, np.ndarray],
               masks: dict[str, np.ndarray]) -> pd.DataFrame:
    """The unit's ``sets.parquet``: one row per (set, image) with ``uid, patient_id, label, set,
    confounded`` (+ ``sex`` when present and the sampled column). ``confounded`` is "carries the
    artifact" for pixel confounders and "is in the sampled group" (e.g. female) for sampled ones."""
    sampled = is_sampled(unit.confounder)
    column = group = None
    if sampled:
        column, group = _sampled_column_group(unit.confounder)
    meta = data.meta
    if column == "age_band" and column not in meta.columns:
        from confounders.sampled import add_age_band

        meta = add_age_band(meta)
    extra = [c for c in dict.fromkeys(["sex", column]) if c is not None and c in meta.columns]
    parts = []
    for key, name in SET_NAMES.items():
        part = meta.iloc[rows[key]]
        frame = pd.DataFrame({"uid": part["uid"].astype(str).to_numpy(),
                              "patient_id": part["patient_id"].astype(str).to_numpy(),
                              "label": part["label"].astype(int).to_numpy(), "set": name})
        frame["confounded"] = (part[column] == group).to_numpy() if sampled else np.asarray(masks[key], bool)
        for c in extra:
            frame[c] = part[c].to_numpy()
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def unit_datasets(unit: Unit, cfg: AuditConfig, data: AuditData, *, batch_size: int = 0,
                  device: torch.device | None = None,
                  plan: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None
                  ) -> tuple[dict[str, Any], int]:
    """The unit's ArrayDatasets "train", "val", "test" (i.i.d.), "ood", "clean" with the artifact
    injected, and the number of confounded training images (-1 for sampled confounders).

    With a CUDA ``device`` the artifacts are injected there (decoded images in, CPU tensors out).
    ``plan`` is a precomputed :func:`unit_plan` for the same ``batch_size``."""
    from medbench.data.dataset import ArrayDataset

    rows, masks = plan if plan is not None else unit_plan(unit, cfg, data, batch_size=batch_size)
    conf = None if is_sampled(unit.confounder) else build_confounder(unit.confounder, seed=cfg.seed)
    base_spec = None if conf is None else baseline_spec(unit.confounder)
    base = None if base_spec is None else build_confounder(base_spec, seed=cfg.seed)
    uids_all = data.meta["uid"].astype(str).tolist()
    cols = ["uid", "patient_id", "label"]

    from medbench.data.keras_augment import create_augmentation

    augment = create_augmentation(cfg.augment, seed=cfg.seed + unit.split)  # the unit's training seed

    def subset(pos: np.ndarray, mask: np.ndarray, clean: bool = False, train: bool = False) -> ArrayDataset:
        meta = data.meta.iloc[pos][cols].reset_index(drop=True)
        meta["uid"] = meta["uid"].astype(str)
        meta["patient_id"] = meta["patient_id"].astype(str)
        imgs = data.images[torch.as_tensor(np.array(pos, dtype=np.int64))]
        uids = [uids_all[i] for i in pos]
        on_gpu = device is not None and device.type == "cuda" and (base is not None or conf is not None)
        if on_gpu:
            imgs = imgs.to(device)
        if base is not None and not clean and not mask.all():  # the clean test set has no artifact
            imgs = inject(base, imgs, uids, ~mask, scale=cfg.artifact_scale)
        if conf is not None and mask.any():
            imgs = inject(conf, imgs, uids, mask, scale=cfg.artifact_scale)
        if on_gpu:
            imgs = imgs.cpu()
        return ArrayDataset(imgs, meta["label"].to_numpy(), meta, transform=augment if train else None)

    n_conf = int(masks["train"].sum()) if conf is not None else -1
    return {s: subset(rows[s], masks[s], clean=s == "clean", train=s == "train") for s in rows}, n_conf


@dataclass
class UnitOutput:
    """What one unit produces: its results row, its ``sets.parquet`` and ``predictions.parquet``."""

    row: dict[str, Any]
    sets: pd.DataFrame
    predictions: pd.DataFrame


def run_unit(unit: Unit, cfg: AuditConfig, data: AuditData, run_dir: Path) -> UnitOutput:
    """Fine-tune one source on one confounded split and evaluate i.i.d., o.o.d. and clean AUC."""
    from medbench.sources import create_source
    from medbench.train import dist
    from medbench.train.config import TrainConfig
    from medbench.train.engine import fit
    from medbench.train.predict import predict

    t0 = time.perf_counter()
    key = spec_label(unit.confounder)
    tcfg = TrainConfig.from_dict({**cfg.train_dict(), "seed": cfg.seed + unit.split})
    device = dist.init_from_env(tcfg.device)  # the training device (cuda:LOCAL_RANK under torchrun)
    plan = unit_plan(unit, cfg, data, batch_size=tcfg.batch_size)
    sets, n_conf = unit_datasets(unit, cfg, data, batch_size=tcfg.batch_size, device=device, plan=plan)

    name, kw = spec_kwargs(unit.source)
    with torch.random.fork_rng(devices=[]):  # seeded head init without touching the caller's RNG
        torch.manual_seed(cfg.seed + unit.split)
        model = create_source(name, num_classes=2, in_chans=1, drop_rate=cfg.drop_rate, **kw)
    res = fit(model, sets["train"], sets["val"], tcfg, run_dir,
              run_info={"audit_unit": unit.uid, "p": unit.p})
    row: dict[str, Any] = {"unit": unit.uid, "source": spec_label(unit.source), "confounder": key,
                           "prevalence": unit.p, "split": unit.split}
    preds = []
    for s in ("test", "ood", "clean"):
        if len(sets[s]) == 0:  # e.g. the authors' sex files: an o.o.d. test set only
            row.update(_auc_block({"test": "iid", "ood": "ood", "clean": "clean"}[s],
                                  pd.DataFrame({"label": [], "prob": []}), 0, 0))
            continue
        pred = predict(res.model, sets[s], batch_size=2 * tcfg.batch_size, device=device,
                       keep_meta=("patient_id",))
        row.update(_auc_block({"test": "iid", "ood": "ood", "clean": "clean"}[s], pred, cfg.n_boot,
                              cfg.seed + unit.split))
        preds.append(pd.DataFrame({"uid": pred["uid"].astype(str), "set": SET_NAMES[s],
                                   "label": pred["label"].astype(int), "prob": pred["prob"].astype(float)}))
    row["gap"] = row["auc_iid"] - row["auc_ood"]
    hist = getattr(res, "history", None)
    row.update({"n_train": len(sets["train"]), "n_val": len(sets["val"]), "n_test": len(sets["test"]),
                "n_confounded_train": n_conf,
                "epochs_run": int(len(hist)) if hist is not None else -1,
                "seconds": round(time.perf_counter() - t0, 2)})
    return UnitOutput(row, sets_table(unit, data, *plan), pd.concat(preds, ignore_index=True))


@dataclass
class AuditResult:
    """Rows (one per unit), the per-(source, confounder, p) summary and the source comparisons."""

    out_dir: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    report_path: Path | None = None
    warnings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=WARNING_COLUMNS))


#: Columns of ``warnings.csv``: kind ("chance", "ci_width", "legibility"), source, confounder, message.
WARNING_COLUMNS = ["kind", "source", "confounder", "message"]


def audit_warnings(cfg: AuditConfig, data: AuditData, results: pd.DataFrame) -> pd.DataFrame:
    """When the numbers mean nothing (:mod:`confounders.audit_checks`): a source at chance on clean
    data, CIs too wide for the test set, artifacts illegible at the working size."""
    from confounders.audit_checks import chance_warnings, ci_width_warnings, legibility_warnings

    rows = (legibility_warnings(cfg.confounders, int(data.images.shape[-1]), seed=cfg.seed)
            + chance_warnings(results) + ci_width_warnings(results))
    for r in rows:
        if r["kind"] != "legibility":
            logger.warning("%s", r["message"])
    return pd.DataFrame(rows, columns=WARNING_COLUMNS)


def run_audit(cfg: AuditConfig | dict[str, Any], out_dir: str | Path, *, data: AuditData | None = None,
              report: bool = True, progress: bool = False, restart: bool = False) -> AuditResult:
    """Run (or resume) the audit into ``out_dir`` and write results, summary and report.

    The folder follows the run contract of :mod:`confounders.audit_folder`: a re-run with another
    run setting (data, seed, preset, training recipe, ...) is refused listing every change; other
    sources, confounders, ps or splits only add (or leave out) units.

    Args:
        cfg: The :class:`AuditConfig` (or its dict).
        out_dir: The audit folder; units already finished there with the same settings are skipped.
        data: Pre-loaded data (default: loaded from ``cfg.data``).
        report: Write ``report.html``.
        progress: Show a progress bar over the units (finished units count as done).
        restart: Discard the folder's audit outputs when its run settings differ, instead of refusing.

    Raises:
        InputError: ``out_dir`` holds an audit with other run settings and ``restart`` is False.
    """
    from tqdm.auto import tqdm

    from medbench.train import dist

    if not isinstance(cfg, AuditConfig):
        cfg = AuditConfig.from_dict(dict(cfg))
    out = Path(out_dir)
    dist.init_from_env(cfg.train_dict().get("device", "auto"))  # under torchrun only rank 0 writes
    main = dist.is_main()
    with open_audit_run(out, run_settings(cfg, data), restart=restart) as run:
        if data is None:
            data = load_data(cfg.data, splits=cfg.splits, seed=cfg.seed)
        n_splits = min(int(cfg.splits), len(data.splits))
        if n_splits < int(cfg.splits):
            logger.warning("data has %d splits; running %d instead of %d", len(data.splits), n_splits, cfg.splits)
        todo = units(cfg, n_splits)
        names = [u.uid for u in todo]
        if main:
            record_config(run, resolved_config(cfg, n_splits, names))
        dist.barrier()
        done = skipped = 0
        bar = tqdm(total=len(todo), desc="audit units", unit="unit", disable=not (progress and main), position=0)
        for unit in todo:
            folder = unit_dir(out, unit)
            unit_cfg = unit_settings(cfg, unit)
            # the training folder carries the unit's settings hash: a changed unit never resumes another's checkpoint
            run_dir = out / "runs" / f"{unit.uid}__{settings_hash(unit_cfg)[:8]}"
            if run.unit_done(unit.uid, unit_cfg, outputs=[folder / f for f in UNIT_FILES]):
                if main and not cfg.keep_checkpoints:  # left by a run killed just after the unit finished
                    shutil.rmtree(run_dir, ignore_errors=True)
                skipped += 1
                bar.update(1)
                continue
            logger.info("unit %s (%d/%d)", unit.uid, done + skipped + 1, len(todo))
            output = run_unit(unit, cfg, data, run_dir)
            if main:
                write_unit(folder, output)
                if not cfg.keep_checkpoints:
                    shutil.rmtree(run_dir, ignore_errors=True)
                run.mark_unit(unit.uid, unit_cfg)
            dist.barrier()
            done += 1
            bar.update(1)
        bar.close()
        if main and not cfg.keep_checkpoints and (out / "runs").is_dir() and not any((out / "runs").iterdir()):
            (out / "runs").rmdir()
        logger.info("audit: %d units run, %d already done", done, skipped)
        results = collect_rows(out, names)
        summary = summarise(results)
        comparisons = compare_sources(results, seed=cfg.seed, n_perm=cfg.n_perm, alpha=cfg.alpha)
        warnings = audit_warnings(cfg, data, results)
        result = AuditResult(out, results, summary, comparisons, warnings=warnings)
        if not main:
            return result
        tables = [("results", results), ("summary", summary), ("comparisons", comparisons), ("warnings", warnings)]
        if cfg.preset == "source-matters":
            from confounders.audit_presets import paper_comparison

            tables.append(("paper_comparison", paper_comparison(summary)))
        for name, df in tables:
            run.write_table(f"{name}.csv", df)
        run.write_metrics({"units": len(results), "splits": n_splits,
                           "summary": summary.to_dict("records"), "comparisons": comparisons.to_dict("records")})
        if report:
            from confounders.audit_report import write_report

            result.report_path = write_report(result, cfg, data, out / "report.html")
    return result

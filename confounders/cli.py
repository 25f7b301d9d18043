"""``medbench confounders`` (the MICCAT tree with registered entries) and ``medbench audit``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medbench.tracking import TRACKER_HELP


def _tree() -> Any:
    from rich.markup import escape
    from rich.tree import Tree

    from confounders.base import CONFOUNDERS, PRESETS, load_builtin_confounders
    from confounders.sampled import SAMPLED
    from confounders.taxonomy import MICCAT
    from medbench.utils.text import plain_doc

    load_builtin_confounders()
    by_path: dict[tuple[str, ...], list[str]] = {}
    for name, cls in CONFOUNDERS.items():
        doc = escape(plain_doc(" ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())))
        presets = [p for p, (base, _) in PRESETS.items() if base == name]
        extra = f" [dim](presets: {', '.join(presets)})[/dim]" if presets else ""
        by_path.setdefault(tuple(cls.miccat), []).append(f"[green]{name}[/green] injector: {doc}{extra}")
    for name in SAMPLED:
        s = SAMPLED.get(name)
        by_path.setdefault(tuple(s.miccat), []).append(f"[cyan]{name}[/cyan] sampled: {escape(plain_doc(s.description))}")

    root = Tree(f"[bold]MICCAT[/bold] {MICCAT.description}")

    def add(node: Any, cat: Any, path: tuple[str, ...]) -> None:
        for child in cat.children:
            p = (*path, child.name)
            branch = node.add(f"[bold]{child.name}[/bold] [dim]{child.description}[/dim]")
            for entry in by_path.get(p, []):
                branch.add(entry)
            add(branch, child, p)

    add(root, MICCAT, ())
    return root


def confounders_command() -> None:
    """Show the MICCAT confounder taxonomy with the registered injectors and sampled confounders."""
    from rich.console import Console

    Console().print(_tree())


def audit_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML audit config (flags override it)."),
    out: Path = typer.Option(Path("runs/audit"), "--out", "-o", help="Audit folder (reruns resume)."),
    source: list[str] | None = typer.Option(None, "--source", "-s", help="Source name (repeat). 'name:arch' sets the arch."),
    confounder: list[str] | None = typer.Option(None, "--confounder", help="Confounder or preset name (repeat)."),
    p: list[float] | None = typer.Option(None, "--p", help="Strength p in [0, 1] (repeat)."),
    splits: int | None = typer.Option(None, "--splits", help="Number of splits to run."),
    data: str | None = typer.Option(None, "--data", help="synthetic | dicom | nih"),
    n: int | None = typer.Option(None, "--n", help="Synthetic images."),
    size: int | None = typer.Option(None, "--size", help="Working image size (px)."),
    manifest: Path | None = typer.Option(None, "--manifest", help="DICOM manifest (medbench ingest)."),
    labels: Path | None = typer.Option(None, "--labels", help="Label table for --data dicom."),
    csv_dir: Path | None = typer.Option(None, "--csv-dir", help="NIH split CSV folder (,path,pid,class)."),
    image_root: Path | None = typer.Option(None, "--image-root", help="Root of relative NIH image paths."),
    positive: str | None = typer.Option(None, "--positive", help="Label/class value that is positive."),
    epochs: int | None = typer.Option(None, "--epochs", help="Training epochs per unit."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda"),
    n_boot: int | None = typer.Option(None, "--n-boot", help="Bootstrap resamples for AUC CIs."),
    tracker: str = typer.Option("none", "--tracker", help=TRACKER_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar over the audit units."),
    preset: str | None = typer.Option(None, "--preset", help="Audit preset: source-matters (the paper's protocol)."),
    imagenet_weights: Path | None = typer.Option(
        None, "--imagenet-weights", help="Keras ImageNet .h5 (resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)."),
    radimagenet_weights: Path | None = typer.Option(
        None, "--radimagenet-weights", help="RadImageNet .h5 (RadImageNet-ResNet50_notop.h5)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Training batch size."),
    restart: bool = typer.Option(False, "--restart", help="Discard an audit in OUT whose data, seed or training "
                                 "settings differ, instead of refusing (other sources, confounders, p or splits "
                                 "only add units)."),
) -> None:
    """Run (or resume) the robustness audit: sources x confounders x p x splits."""
    from rich.console import Console

    from confounders.audit import AuditConfig, run_audit
    from confounders.audit_presets import audit_preset, missing_weights
    from medbench.errors import InputError

    if preset:
        base = audit_preset(preset, imagenet_weights=imagenet_weights, radimagenet_weights=radimagenet_weights)
        if config:
            base.update(AuditConfig.from_yaml(config).to_dict())
        cfg = base
    else:
        cfg = AuditConfig.from_yaml(config).to_dict() if config else AuditConfig().to_dict()
    if source:
        known = {s["name"]: s for s in cfg["sources"] if isinstance(s, dict)} if preset else {}
        chosen = []
        for s in source:
            name, _, arch = s.partition(":")
            entry = dict(known.get(name, {"name": name, "label": s}))  # a preset source keeps label/weights
            if arch:
                entry["arch"] = arch
            chosen.append(entry if (arch or name in known) else s)
        cfg["sources"] = chosen
    if confounder:
        cfg["confounders"] = list(confounder)
    if p:
        cfg["ps"] = list(p)
    if splits is not None:
        cfg["splits"] = splits
    d = dict(cfg["data"])
    if data is not None and data != d.get("kind"):
        d = {"kind": data}
    for key, val in (("n", n), ("size", size), ("manifest", manifest), ("labels", labels),
                     ("csv_dir", csv_dir), ("image_root", image_root), ("positive", positive)):
        if val is not None:
            d[key] = str(val) if isinstance(val, Path) else val
    cfg["data"] = d
    train = dict(cfg.get("train") or {})
    if epochs is not None:
        train["epochs"] = epochs
    if device is not None:
        train["device"] = device
    if batch_size is not None:
        train["batch_size"] = batch_size
    cfg["train"] = train
    if n_boot is not None:
        cfg["n_boot"] = n_boot
    if missing := missing_weights(cfg["sources"]):
        raise InputError(f"preset {preset!r}: source(s) {missing} need weight files: pass --imagenet-weights "
                         "and --radimagenet-weights (Keras .h5), or choose sources with --source")
    result = run_audit(AuditConfig.from_dict(cfg), out, progress=progress, restart=restart)
    console = Console()
    cols = ["source", "confounder", "prevalence", "auc_iid", "auc_ood", "auc_clean", "gap", "n_splits"]
    console.print(result.summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    console.print(f"results: {out / 'results.csv'}  report: {result.report_path}")
    from medbench.tracking import table_metrics, track_finished

    track_finished(tracker, out, name="audit", config=cfg,
                   final=table_metrics(result.summary, ["source", "confounder", "prevalence"], cols[3:]),
                   artifacts=(out / "results.csv", result.report_path or out / "report.html"))


def register(app: typer.Typer) -> None:
    """Add ``confounders`` and ``audit`` to the medbench CLI."""
    app.command("confounders")(confounders_command)
    app.command("audit")(audit_command)

"""``medbench denoise simulate|train|apply|evaluate``: low-dose CT simulation and denoising."""

from __future__ import annotations

from pathlib import Path

import typer

from medbench.tracking import TRACKER_HELP
from medbench.utils.text import split_list

RESTART_HELP = ("Discard this folder's previous run (its outputs, units and config) and start over; "
                "without it a re-run with other settings is refused and one with the same settings resumes.")
SYNTHETIC_FOV_MM = 350.0  # default field of view of synthetic phantoms: a body scan
FILTER_HELP = ("FBP filter (scikit-image name: shepp-logan, ramp, cosine, hamming, hann). Default shepp-logan, "
               "the TMD-LDCT authors' filter; ramp was medbench's earlier default.")

denoise_app = typer.Typer(help="Low-dose CT: simulate, train, apply and evaluate denoisers.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``denoise`` sub-app to the medbench CLI."""
    app.add_typer(denoise_app, name="denoise")


def _parse_params(items: list[str]) -> dict[str, object]:
    from medbench.errors import InputError

    out: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--param {item!r}: write it as name=value, e.g. --param h_hu=30")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = float(v) if any(ch in v for ch in ".e") or v.lstrip("-").isdigit() else v
        except ValueError:
            out[k.strip()] = v
    return out


@denoise_app.command("simulate")
def simulate_cmd(
    input: Path = typer.Argument(None, help="DICOM CT series folder (or file); omit with --synthetic."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    n0: float = typer.Option(None, help="Incident photons per detector bin (low dose)."),
    dose_fraction: float = typer.Option(None, help="Dose as a fraction of --n0-ref (instead of --n0)."),
    n0_ref: float = typer.Option(1e6, help="Full-dose photon count for --dose-fraction."),
    views: int = typer.Option(None, help="Projection views (default max(180, pi/2 * size))."),
    electronic_sd: float = typer.Option(0.0, help="Gaussian electronic noise SD on the counts."),
    synthetic: int = typer.Option(0, help="Simulate this many synthetic phantom volumes instead."),
    slices: int = typer.Option(8, help="Slices per synthetic volume."),
    size: int = typer.Option(64, help="Synthetic slice size in pixels."),
    pixel_mm: float = typer.Option(None, "--pixel-mm", help="Synthetic pixel size in mm (default: a 350 mm "
                                   "field of view, 350/size; the phantom body spans ~80% of it)."),
    filter_name: str = typer.Option("shepp-logan", "--filter", help=FILTER_HELP),
    seed: int = typer.Option(0, help="Noise seed (per series/slice)."),
    workers: int = typer.Option(None, help="Worker processes (default: CPU count)."),
    restart: bool = typer.Option(False, "--restart", help=RESTART_HELP),
) -> None:
    """Write low-dose versions of a CT series (projection-domain Poisson noise) or of phantoms."""
    import logging

    from medbench.errors import InputError

    log = logging.getLogger(__name__)
    if n0 is None and dose_fraction is None:
        n0 = 2.5e4
    if synthetic:
        from harmonization.ct.apply import simulate_phantoms
        from harmonization.ct.simulate import Geometry, resolve_n0

        n0_val = resolve_n0(n0, dose_fraction, n0_ref)
        if pixel_mm is not None and not pixel_mm > 0:
            raise InputError(f"--pixel-mm must be positive, got {pixel_mm}")
        geo = Geometry(n_views=views or 180, pixel_mm=pixel_mm or SYNTHETIC_FOV_MM / size, filter_name=filter_name)
        log.info("synthetic phantoms: %d px at %.3g mm (field of view %.0f mm), %d views", size, geo.pixel_mm,
                 size * geo.pixel_mm, geo.n_views)
        simulate_phantoms(out, synthetic, n0=n0_val, n_slices=slices, size=size, geometry=geo, seed=seed,
                          workers=workers, restart=restart)
        log.info("wrote %d synthetic volumes to %s", synthetic, out)
        return
    if input is None:
        raise InputError("give a DICOM series folder/file, or --synthetic N for phantoms")
    from harmonization.ct.apply import simulate_series

    done = simulate_series(input, out, n0=n0 if dose_fraction is None else None, dose_fraction=dose_fraction,
                           n0_ref=n0_ref, n_views=views, electronic_sd=electronic_sd, seed=seed, workers=workers,
                           restart=restart, filter_name=filter_name)
    log.info("simulated %d series into %s", len(done), out)


@denoise_app.command("train")
def train_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (checkpoints; re-running resumes)."),
    model: str = typer.Option("two_stage", help="Learned denoiser to train (registered with a trainer: two_stage, redcnn)."),
    n_volumes: int = typer.Option(24, help="Training phantom volumes."),
    slices: int = typer.Option(8, help="Slices per volume."),
    size: int = typer.Option(64, help="Slice size in pixels."),
    n0: float = typer.Option(2.5e4, help="Low-dose photon count."),
    mixed_doses: list[str] = typer.Option([], "--mixed-dose", "--mixed-doses", help="Photon count cycled "
                                          "over the volumes (repeat: --mixed-dose 1e4 --mixed-dose 5e4; "
                                          "mixed-dose training; overrides --n0)."),
    views: int = typer.Option(180, help="Projection views."),
    pixel_mm: float = typer.Option(5.0, help="Pixel size in mm."),
    filter_name: str = typer.Option("shepp-logan", "--filter", help=FILTER_HELP),
    epochs: int = typer.Option(10, help="Training epochs (per stage)."),
    iters: int = typer.Option(100, help="Steps per epoch."),
    batch_size: int = typer.Option(16, help="Patches per step."),
    patch: int = typer.Option(32, help="Training patch size in pixels."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (dropped 10x at 2/3 of the epochs)."),
    proj_width: int = typer.Option(16, help="Channels of the projection-domain network."),
    proj_depth: int = typer.Option(5, help="Convolution layers of the projection-domain network."),
    img_width: int = typer.Option(24, help="Channels of the image-domain network."),
    img_depth: int = typer.Option(6, help="Convolution layers of the image-domain network."),
    redcnn_width: int = typer.Option(24, help="Channels of RED-CNN (--model redcnn)."),
    prior: bool = typer.Option(True, "--prior/--no-prior", help="Feed the noise-prior channel (--no-prior: ablation without it)."),
    projection: bool = typer.Option(True, "--projection/--no-projection", help="Train the projection-domain stage (--no-projection: image-domain network only)."),
    seed: int = typer.Option(0, help="Seed of the phantoms, noise, initialisation and patches."),
    workers: int = typer.Option(1, help="Worker processes for the simulation."),
    tracker: str = typer.Option("none", "--tracker", help=TRACKER_HELP),
    restart: bool = typer.Option(False, "--restart", help=RESTART_HELP),
) -> None:
    """Train the two-stage model (or RED-CNN) on simulated phantom pairs."""
    import importlib
    import logging
    from dataclasses import asdict

    from harmonization.ct.denoisers import DENOISERS
    from harmonization.ct.simulate import Geometry
    from harmonization.ct.training import WORKFLOW, DenoiserTrainConfig, make_training_data
    from medbench.errors import InputError
    from medbench.runs import open_run

    spec = DENOISERS.get(model)  # unknown names: "did you mean"
    if spec.trainer is None:
        trainable = [n for n, c in DENOISERS.items() if c.trainer]
        raise InputError(f"--model {model!r} is not trained by medbench: choose one of {', '.join(trainable)}")
    cfg = DenoiserTrainConfig(epochs=epochs, iters_per_epoch=iters, batch_size=batch_size, patch=patch, lr=lr,
                              lr_drop_epoch=(2 * epochs) // 3,
                              seed=seed, proj_width=proj_width, proj_depth=proj_depth, img_width=img_width,
                              img_depth=img_depth, use_prior=prior, use_projection=projection,
                              redcnn_width=redcnn_width)
    doses = [float(v) for v in split_list(mixed_doses)] or n0
    settings = {"command": "train", "model": model, "train": asdict(cfg),
                "data": {"n_volumes": n_volumes, "slices": slices, "size": size, "n0": doses, "views": views,
                         "pixel_mm": pixel_mm, "filter": filter_name, "seed": seed}}
    module, _, func = spec.trainer.partition(":")
    fn = getattr(importlib.import_module(module), func)
    with open_run(out, WORKFLOW, settings, outputs=[f"{model}.pt", *spec.trainer_outputs], restart=restart) as run:
        data = make_training_data(n_volumes, slices, size=size, n0=doses, seed=seed,
                                  geometry=Geometry(n_views=views, pixel_mm=pixel_mm, filter_name=filter_name),
                                  workers=workers)
        path = fn(data, cfg, out, run=run)
    logging.getLogger(__name__).info("model written to %s", path)
    if tracker != "none":
        from harmonization.ct.learned import load_checkpoint
        from medbench.tracking import track_finished

        meta = load_checkpoint(path).get("meta", {})
        stage = spec.history_key
        track_finished(tracker, out, name=f"denoise train {model}", config=meta.get("config", {}),
                       epochs=[{"epoch": i, f"{stage}_l1": v} for i, v in enumerate(meta.get("history", []), start=1)],
                       final={f"{stage}_l1": (meta.get("history") or [float("nan")])[-1]})


@denoise_app.command("apply")
def apply_cmd(
    input: Path = typer.Argument(..., help="DICOM CT series folder or a single slice file."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (one sub-folder per series)."),
    denoiser: str = typer.Option("two_stage", help="Registered denoiser name."),
    checkpoint: Path = typer.Option(None, help="Checkpoint of a learned denoiser (default: its bundled one)."),
    n0: float = typer.Option(None, help="Photon count for the two-stage noise prior."),
    param: list[str] = typer.Option([], "--param", "-p", help="Denoiser setting name=value (repeat)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes, one series per task."),
    executor: str = typer.Option("local", "--executor", help="'local' processes or 'dask'."),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler address (default: a LocalCluster)."),
    force_model: bool = typer.Option(False, "--force-model", help="Use a learned model even when the series' "
                                     "pixel size/matrix differ from its training geometry (default: fall "
                                     "back to NLM with h from the estimated noise)."),
    allow_noise_increase: bool = typer.Option(False, "--allow-noise-increase", help="Write a series even "
                                              "when denoising raises the flat soft-tissue noise SD."),
    deidentify: bool = typer.Option(False, "--deidentify", help="De-identify the written headers (DICOM "
                                    "PS3.15 Basic Profile, Retain Patient Characteristics; UIDs remapped "
                                    "with the project secret). Default: the source header is kept."),
    restart: bool = typer.Option(False, "--restart", help=RESTART_HELP),
) -> None:
    """Denoise a DICOM CT series; writes a new series (new UIDs, derivation noted, HU preserved).

    Geometry (pixel size, matrix) comes from the files: a learned model trained at another
    geometry is replaced by NLM (with a warning) unless --force-model. The flat soft-tissue noise
    SD is measured before/after; a series whose noise rises is refused unless
    --allow-noise-increase. Each series is one task; a series that fails is reported
    (denoise_log.csv, exit code 1) and the others go on.
    """
    import logging

    from harmonization.ct.apply import denoise_batch

    params = _parse_params(param)
    if checkpoint is not None:
        params["checkpoint"] = str(checkpoint)
    table = denoise_batch(input, out, denoiser=denoiser, params=params, n0=n0, workers=workers,
                          executor=executor, scheduler=scheduler, strict_geometry=not force_model,
                          allow_noise_increase=allow_noise_increase, deidentify=deidentify, restart=restart)
    logging.getLogger(__name__).info("denoised %d series into %s", int((table["status"] != "failed").sum()), out)
    failed = table[table["status"] == "failed"]
    for _, row in failed.head(10).iterrows():
        typer.echo(f"  failed: {row['source']}: {row['error']}", err=True)
    if len(failed):
        raise typer.Exit(1)


@denoise_app.command("evaluate")
def evaluate_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Report folder."),
    denoisers: list[str] = typer.Option(["fbp", "gaussian", "bilateral", "nlm", "two_stage"], "--denoiser", "--denoisers",
                                        help="Denoiser to compare (repeat: --denoiser fbp --denoiser nlm)."),
    checkpoint: Path = typer.Option(None, help="two_stage checkpoint (default: bundled)."),
    redcnn_checkpoint: Path = typer.Option(None, help="redcnn checkpoint (default: bundled)."),
    n_volumes: int = typer.Option(2, help="Held-out phantom volumes."),
    slices: int = typer.Option(8, help="Slices per volume."),
    size: int = typer.Option(64, help="Slice size in pixels."),
    n0: float = typer.Option(2.5e4, help="Low-dose photon count."),
    views: int = typer.Option(180, help="Projection views."),
    pixel_mm: float = typer.Option(5.0, help="Pixel size in mm."),
    filter_name: str = typer.Option("shepp-logan", "--filter", help=FILTER_HELP),
    window: str = typer.Option("-160,240", help="HU window LO,HI for PSNR/SSIM/RMSE."),
    seed: int = typer.Option(0, help="Seed of the held-out phantoms and noise."),
    restart: bool = typer.Option(False, "--restart", help=RESTART_HELP),
) -> None:
    """Compare denoisers on held-out phantoms: table + HTML report with slices and difference images."""
    import logging

    from harmonization.ct.report import evaluate_to_folder
    from harmonization.ct.simulate import Geometry

    lo, hi = (float(v) for v in window.split(","))
    paths = evaluate_to_folder(
        out, split_list(denoisers), checkpoint=checkpoint,
        redcnn_checkpoint=redcnn_checkpoint, n_volumes=n_volumes, n_slices=slices, size=size, n0=n0,
        geometry=Geometry(n_views=views, pixel_mm=pixel_mm, filter_name=filter_name), window=(lo, hi), seed=seed, restart=restart)
    logging.getLogger(__name__).info("report: %s", paths["report"])

"""Batch paths over DICOM CT series: simulate a low-dose version, or denoise; resumable.

Each input series is written to its own output folder with a new SeriesInstanceUID, the derivation
noted, HU preserved (modality rescale chosen by ``medbench.io.write``) and the geometry copied from
the source, plus ``done.json`` (its provenance: files, derivation, noise SDs). The output folder is
a :func:`medbench.runs.open_run` run folder (``config.yaml``, ``denoise.log``, ``units/``): each
series is a unit recorded with its settings hash, so a re-run with the same settings skips finished
series, a changed setting is refused (every change listed; ``restart=True`` starts over) and a
series whose unit is missing is recomputed from scratch.

Denoising real CT is guarded twice:

- Geometry: a learned model is used only when the series' pixel size is within 25% of the one it
  was trained at and its matrix equals the training matrix (the two-stage model re-projects the
  images with its training views). Otherwise the image-domain NLM, with ``h`` from each slice's
  estimated noise, is used instead, with a warning saying why (``strict_geometry=False`` forces
  the model).
- Noise: the SD in flat soft-tissue boxes (:func:`flat_tissue_noise`) is measured before and after;
  a series whose noise rises by more than 2% is refused (``allow_noise_increase=True`` writes it
  with a warning). Both numbers go to ``done.json``; NaN with a reason when no flat box exists.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from medbench.errors import InputError
from medbench.runs import Run, open_run
from medbench.utils.files import hash_id, write_json_atomic

log = logging.getLogger(__name__)

PADDING_HU = -1024.0  # values below this are outside the scan FOV (padding) and kept as they are
MARKER = "done.json"  # per-series provenance record (written last)
BATCH_LOG = "denoise_log.csv"  # one row per series of a ``denoise apply`` batch
WORKFLOW = "denoise"  # run-folder name of every ``medbench denoise`` command (log: denoise.log)
BUNDLED_TRAINING = {"pixel_mm": 5.0, "size": 64}  # geometry of the bundled phantom checkpoints
NOISE_TOLERANCE = (1.02, 0.5)  # refuse when the flat soft-tissue noise SD rises by > 2% + 0.5 HU
FALLBACK = "nlm"  # image-domain denoiser used when a learned model's geometry does not match


def find_series(path: str | os.PathLike[str],
                out_dir: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """Series UID -> files under ``path`` (a folder or one file).

    ``out_dir`` inside the ``path`` folder is left out (a re-run never reads its own outputs);
    ``out_dir`` equal to it is refused. Stale temporary files of a killed run in it are removed.
    """
    from medbench.io import group_series
    from medbench.utils.files import output_inside_input, remove_stale_temps

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist: pass a DICOM file or a folder of a CT series")
    inside = output_inside_input(p, out_dir) if out_dir is not None else None
    if out_dir is not None:
        remove_stale_temps(out_dir)
    groups = group_series(str(p), exclude=inside)
    if not groups:
        raise InputError(f"{p}: no DICOM CT files with a SeriesInstanceUID found")
    return groups


def _read(files: list[str], uid: str) -> Any:
    from medbench.io import read_series

    series = read_series(files if len(files) > 1 else files[0], series_uid=uid)
    modality = str(getattr(series.datasets[0], "Modality", "CT")) if series.datasets else "CT"
    if modality != "CT":
        raise InputError(f"{files[0]}: modality {modality}, expected CT (HU): pass a CT series")
    return series


def series_folder(uid: str) -> str:
    """The output sub-folder (and unit name) of series ``uid``."""
    return f"series-{hash_id(uid)}"


def file_fingerprint(path: str | os.PathLike[str] | None) -> str | None:
    """Short content hash of a file (a checkpoint), so a run folder notices a replaced file."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return None
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def _own_outputs(out_root: Path, names: Any) -> list[str]:
    """What ``restart`` removes: these series folders, any other ``series-*`` folder, the batch log."""
    old = {p.name for p in out_root.glob("series-*") if p.is_dir()} if out_root.is_dir() else set()
    return sorted(old | set(names)) + [BATCH_LOG]


def _fresh(folder: Path) -> None:
    """Empty a unit's folder before (re)computing it (a killed run may have left part of it)."""
    if folder.is_dir():
        shutil.rmtree(folder)


def _process_all(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], what: str,
                 fn: Callable[[Any], tuple[np.ndarray, str, dict[str, Any]]], *, settings: dict[str, Any],
                 restart: bool = False, progress: bool = True) -> list[Path]:
    """Run ``fn(series) -> (hu, description, info)`` on every series under ``path``; skip finished ones."""
    groups = find_series(path, out_dir)
    out_root = Path(out_dir)
    names = {uid: series_folder(uid) for uid in groups}
    run_settings = {"command": what, "input": str(Path(path).resolve()), **settings}
    written = []
    with open_run(out_root, WORKFLOW, run_settings, outputs=_own_outputs(out_root, names.values()),
                  restart=restart) as run:
        for uid, files in tqdm(groups.items(), desc=what, disable=not progress or len(groups) < 2, unit="series"):
            name = names[uid]
            folder = out_root / name
            if run.unit_done(name, run_settings, outputs=[f"{name}/{MARKER}"]):
                log.info("%s: %s already done, skipping", what, folder)
                written.append(folder)
                continue
            _fresh(folder)
            series = _read(files, uid)
            _write(folder, uid, series, *fn(series))
            run.mark_unit(name, run_settings)
            written.append(folder)
    return written


def _write(folder: Path, uid: str, series: Any, hu: np.ndarray, description: str, info: dict[str, Any], *,
           deidentify: bool = False) -> None:
    """Write the derived series into ``folder``, then its :data:`MARKER` provenance record."""
    from medbench.io import write_ct_series

    deid = None
    if deidentify:
        from medbench.io.deid import METHOD, Deidentifier

        deid = Deidentifier()  # keyed by the project secret: the same UID map in every worker
        info = {**info, "deidentified": METHOD}
    paths = write_ct_series(hu.astype(np.float32), folder, reference=series, description=description,
                            deidentify=deid)
    write_json_atomic(folder / MARKER, {"source_series_hash": hash_id(uid), "files": [p.name for p in paths],
                                        "description": description, **info})


def _square(vol: np.ndarray, path_hint: str) -> np.ndarray:
    if vol.shape[-1] != vol.shape[-2]:
        raise InputError(f"{path_hint}: slices are {vol.shape[-2:]}, the projector needs square slices; "
                         "crop or pad the series to square first")
    return vol


def default_views(size: int) -> int:
    """Views for an ``size``-pixel slice: at least 180, about pi/2 * size (angular Nyquist)."""
    return max(180, int(math.ceil(math.pi / 2 * size)))


def simulate_series(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                    n0: float | None = None, dose_fraction: float | None = None, n0_ref: float = 1e6,
                    n_views: int | None = None, electronic_sd: float = 0.0, seed: int = 0,
                    workers: int | None = None, progress: bool = True, restart: bool = False,
                    filter_name: str = "shepp-logan") -> list[Path]:
    """Write a simulated low-dose version of every CT series under ``path`` (a resumable run folder).

    ``filter_name`` is the FBP filter (default Shepp-Logan, the TMD-LDCT authors'; ``"ramp"`` selectable).
    """
    from harmonization.ct.simulate import Geometry, resolve_n0, simulate_low_dose

    n0_val = resolve_n0(n0, dose_fraction, n0_ref)

    def fn(series: Any) -> tuple[np.ndarray, str, dict[str, Any]]:
        vol = _square(series.hu, series.paths[0])
        geo = Geometry(n_views=n_views or default_views(vol.shape[-1]), pixel_mm=float(series.spacing[2]),
                       filter_name=filter_name)
        res = simulate_low_dose(vol, n0=n0_val, geometry=geo, seed=seed, uid=series.series_uid,
                                electronic_sd=electronic_sd, workers=workers, progress=progress)
        ld = np.where(vol < PADDING_HU, vol, res.ld_hu)
        desc = (f"medbench simulated low dose: parallel-beam {geo.n_views} views, Poisson N0={n0_val:g}"
                f", electronic SD {electronic_sd:g}, FBP {geo.filter_name}")
        return ld, desc, {"n0": n0_val, "n_views": geo.n_views, "seed": seed}

    settings = {"n0": n0_val, "n_views": n_views, "electronic_sd": electronic_sd, "seed": seed, "filter": filter_name}
    return _process_all(path, out_dir, "simulate", fn, settings=settings, restart=restart, progress=progress)


def simulate_phantoms(out_dir: str | os.PathLike[str], n_volumes: int, *, n0: float, n_slices: int = 8,
                      size: int = 64, geometry: Any, seed: int = 0, workers: int | None = None,
                      restart: bool = False) -> list[Path]:
    """Simulate ``n_volumes`` synthetic phantoms into ``out_dir/phantom-NNN`` (one unit each).

    Each folder holds the full- and low-dose series, ``sinograms.npz`` (low/full-dose sinograms and
    the phantom) and ``done.json`` (dose, views, seed, ROIs). The folder is a run folder like the
    series commands' (see the module docstring).
    """
    from harmonization.ct.phantoms import make_phantom_volume
    from harmonization.ct.simulate import simulate_low_dose
    from medbench.io import write_ct_series
    from medbench.utils.files import atomic_path

    out_root = Path(out_dir)
    settings = {"command": "simulate", "synthetic": n_volumes, "n0": float(n0), "slices": n_slices, "size": size,
                "n_views": geometry.n_views, "pixel_mm": geometry.pixel_mm, "filter": geometry.filter_name, "seed": seed}
    names = [f"phantom-{i:03d}" for i in range(n_volumes)]
    old = {p.name for p in out_root.glob("phantom-*") if p.is_dir()} if out_root.is_dir() else set()
    written = []
    with open_run(out_root, WORKFLOW, settings, outputs=sorted(old | set(names)), restart=restart) as run:
        for i, name in enumerate(names):
            folder = out_root / name
            written.append(folder)
            unit = {**settings, "volume": i}
            if run.unit_done(name, unit, outputs=[f"{name}/{MARKER}"]):
                log.info("simulate: %s already done, skipping", folder)
                continue
            _fresh(folder)
            vol, info = make_phantom_volume(n_slices, size=size, seed=seed, uid=f"cli-{i}")
            res = simulate_low_dose(vol, n0=n0, geometry=geometry, seed=seed, uid=f"cli-{i}", workers=workers)
            sp = (geometry.pixel_mm,) * 3
            write_ct_series(res.fd_hu, folder / "full_dose", spacing=sp, description="medbench phantom, full-dose FBP")
            write_ct_series(res.ld_hu, folder / "low_dose", spacing=sp,
                            description=f"medbench phantom, simulated low dose N0={n0:g}, {geometry.n_views} views")
            with atomic_path(folder / "sinograms.npz") as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, sino_ld=res.sino_ld, sino_fd=res.sino_fd, phantom=vol)
            write_json_atomic(folder / MARKER, {"n0": n0, "n_views": geometry.n_views, "seed": seed,
                                                "flat_rois": info.flat_rois, "edge_roi": info.edge_roi})
            run.mark_unit(name, unit)
    return written


def flat_tissue_noise(vol: np.ndarray, *, box: int = 12, tissue: tuple[float, float] = (-50.0, 150.0),
                      margin: int = 4, fraction: float = 0.25,
                      boxes: np.ndarray | None = None) -> tuple[float, np.ndarray, str]:
    """Noise SD (HU) in flat soft tissue: median pixel SD over the flattest boxes.

    The slices are tiled into ``box`` x ``box`` boxes; boxes whose pixels, and those within
    ``margin`` px around them, all lie in ``tissue`` HU are candidates (so smoothing cannot pull an
    edge into them) and the ``fraction`` with the lowest SD are kept. Pass ``boxes`` (from a
    previous call) to measure another volume in the same places.

    Returns:
        ``(sd, boxes, reason)``: ``boxes`` rows are ``(z, row, col)``; ``sd`` is NaN with a reason
        when no box qualifies.
    """
    v = np.asarray(vol, dtype=np.float64)
    if v.ndim == 2:
        v = v[None]
    z, h, w = v.shape
    nr, nc = h // box, w // box
    if nr == 0 or nc == 0:
        return float("nan"), np.zeros((0, 3), int), f"slices smaller than one {box}-px box"
    tiles = v[:, :nr * box, :nc * box].reshape(z, nr, box, nc, box).transpose(0, 1, 3, 2, 4)
    tiles = tiles.reshape(z, nr, nc, box * box)
    sds = tiles.std(axis=-1, ddof=1)
    if boxes is None:
        from scipy.ndimage import binary_erosion

        inside = (v >= tissue[0]) & (v <= tissue[1])
        if margin > 0:
            inside = np.stack([binary_erosion(s, iterations=margin, border_value=0) for s in inside])
        ok = inside[:, :nr * box, :nc * box].reshape(z, nr, box, nc, box).all(axis=(2, 4))
        if not ok.any():
            return float("nan"), np.zeros((0, 3), int), (f"no {box}x{box}-px box entirely within "
                                                         f"{tissue[0]:g}..{tissue[1]:g} HU (no flat soft tissue)")
        cand = np.argwhere(ok)
        order = np.argsort(sds[ok])
        boxes = cand[order[:max(1, int(round(fraction * len(cand))))]]
    if len(boxes) == 0:
        return float("nan"), boxes, "no flat soft-tissue boxes given"
    return float(np.median(sds[boxes[:, 0], boxes[:, 1], boxes[:, 2]])), boxes, ""


def _training_geometry(den: Any) -> tuple[float, int]:
    """Pixel size and matrix a learned denoiser was trained at (bundled defaults when unrecorded)."""
    model = den._model
    meta = getattr(model, "meta", {}) or {}
    geo = getattr(model, "geometry", None)
    pixel = float(geo.pixel_mm) if geo is not None else float(meta.get("pixel_mm", BUNDLED_TRAINING["pixel_mm"]))
    return pixel, int(meta.get("size", BUNDLED_TRAINING["size"]))


def geometry_mismatch(den: Any, denoiser: str, pixel_mm: float, shape: tuple[int, int]) -> str:
    """Why a learned model should not be applied at this geometry ("" when it may)."""
    if not getattr(den, "learned", False):
        return ""
    train_px, train_size = _training_geometry(den)
    problems = []
    if not 0.8 <= pixel_mm / train_px <= 1.25:
        problems.append(f"pixel size {pixel_mm:.3g} mm vs {train_px:.3g} mm")
    if tuple(shape) != (train_size, train_size):
        problems.append(f"matrix {shape[0]}x{shape[1]} vs {train_size}x{train_size}")
    if not problems:
        return ""
    return (f"the {denoiser} checkpoint was trained at another geometry ({'; '.join(problems)}); "
            "applying it here adds streaks and noise")


def _denoise_volume(den: Any, denoiser: str, series: Any, n0: float | None, progress: bool, *,
                    strict_geometry: bool = True,
                    allow_noise_increase: bool = False) -> tuple[np.ndarray, str, dict[str, Any]]:
    """Denoised HU volume, derivation description and marker info of one series."""
    vol = series.hu
    dz, dy, dx = (float(v) for v in series.spacing)
    ctx: dict[str, Any] = {"pixel_mm": dx}
    if n0 is not None:
        ctx["n0"] = float(n0)
    info: dict[str, Any] = {"pixel_mm": [dy, dx], "matrix": list(vol.shape[-2:])}
    why = geometry_mismatch(den, denoiser, dx, vol.shape[-2:])
    if why and strict_geometry:
        from harmonization.ct.denoisers import create_denoiser

        log.warning("%s: %s; using the image-domain %s with h from the estimated noise instead "
                    "(give a checkpoint trained at this geometry, or strict_geometry=False / "
                    "--force-model to use it anyway)", series.paths[0], why, FALLBACK)
        info["fallback"] = f"{denoiser} -> {FALLBACK}: {why}"
        den, denoiser = create_denoiser(FALLBACK), FALLBACK
    elif why:
        log.warning("%s: %s (forced)", series.paths[0], why)
        info["geometry_warning"] = why
    if getattr(den, "square_only", False):
        _square(vol, series.paths[0])
    clipped = np.maximum(vol, PADDING_HU)
    if getattr(den, "learned", False):  # volume-aware, with their own progress bars
        out = den(clipped, **ctx)
    else:  # classical filters work slice by slice
        out = np.stack([den(s) for s in tqdm(clipped, desc=denoiser, disable=not progress, unit="slice")])
    out = np.where(vol < PADDING_HU, vol, np.maximum(out, PADDING_HU))
    before, boxes, reason = flat_tissue_noise(vol)
    after = flat_tissue_noise(out, boxes=boxes)[0] if len(boxes) else float("nan")
    info["noise_sd_before"], info["noise_sd_after"] = before, after
    if reason:
        info["noise_sd_note"] = reason
        log.warning("%s: noise SD not measured: %s", series.paths[0], reason)
    elif after > NOISE_TOLERANCE[0] * before + NOISE_TOLERANCE[1]:
        msg = (f"{series.paths[0]}: {denoiser} raises the noise SD in flat soft tissue from {before:.2f} to "
               f"{after:.2f} HU")
        if not allow_noise_increase:
            raise InputError(msg + ": not written; choose another denoiser (e.g. nlm) or pass "
                             "--allow-noise-increase")
        log.warning(msg)
        info["noise_warning"] = msg
    else:
        log.info("%s: flat soft-tissue noise SD %.2f -> %.2f HU", series.paths[0], before, after)
    settings = {k: v for k, v in den.params().items() if k != "progress"}
    desc = f"medbench denoise {denoiser} {settings}"
    info.update({"denoiser": denoiser, "params": {k: str(v) for k, v in settings.items()}})
    return out, desc[:1000], info


_DENOISERS: dict[str, Any] = {}


def _learned(denoiser: str) -> bool:
    """Whether the registered ``denoiser`` is a learned one (unknown names raise with close matches)."""
    from harmonization.ct.denoisers import DENOISERS

    return bool(DENOISERS.get(denoiser).learned)


def _denoise_job(job: tuple[str, list[str], str, str, dict[str, Any], float | None, bool, dict[str, bool], Run,
                           dict[str, Any]]) -> str:
    """One task of :func:`denoise_batch`: denoise one series into its folder, then mark its unit."""
    from harmonization.ct.denoisers import create_denoiser

    uid, files, folder_name, denoiser, kw, n0, progress, guards, run, unit_settings = job
    guards = dict(guards)
    deidentify = bool(guards.pop("deidentify", False))
    folder = Path(folder_name)
    key = f"{denoiser}:{sorted(kw.items())!r}"
    if key not in _DENOISERS:  # one model load per worker process
        _DENOISERS[key] = create_denoiser(denoiser, **kw)
    _fresh(folder)
    series = _read(files, uid)
    _write(folder, uid, series, *_denoise_volume(_DENOISERS[key], denoiser, series, n0, progress, **guards),
           deidentify=deidentify)
    run.mark_unit(folder.name, unit_settings)
    return "written"


def _create_checked(denoiser: str, kw: dict[str, Any]) -> Any:
    """The denoiser, or a one-line :class:`InputError` naming what is wrong with its settings."""
    from harmonization.ct.denoisers import DENOISERS, create_denoiser
    from medbench.errors import MedbenchError

    DENOISERS.get(denoiser)  # unknown name: UnknownNameError with close matches
    try:
        return create_denoiser(denoiser, **kw)
    except InputError as exc:  # keep it to one line (torch's messages span many)
        raise InputError(" ".join(str(exc).split())[:500]) from None
    except MedbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a corrupt checkpoint
        first = (str(exc).splitlines() or [""])[0][:200]
        shown = {k: v for k, v in kw.items() if k != "progress"}
        raise InputError(f"denoiser {denoiser!r} cannot be created with {shown} ({type(exc).__name__}: {first}); "
                         "pass a --checkpoint written by `medbench denoise train` and valid --param values") from None


def denoise_batch(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, denoiser: str = "two_stage",
                  params: dict[str, Any] | None = None, n0: float | None = None, workers: int | None = 1,
                  executor: str = "local", scheduler: str | None = None, progress: bool = True,
                  strict_geometry: bool = True, allow_noise_increase: bool = False,
                  deidentify: bool = False, restart: bool = False) -> Any:
    """Denoise every CT series under ``path`` (folder or single file) into derived series, one task
    per series on :func:`medbench.parallel.map_items`; finished series are skipped.

    ``out_dir`` is a run folder (see the module docstring): ``denoise_log.csv`` lists the batch and
    ``metrics.json`` the flat soft-tissue noise SD before/after of every finished series. A re-run
    with other settings (denoiser, parameters, checkpoint content, n0, guards, de-identification,
    input) is refused unless ``restart``.

    A learned model at a geometry it was not trained for is replaced by NLM unless
    ``strict_geometry=False``; a series whose flat soft-tissue noise rises fails unless
    ``allow_noise_increase`` (see the module docstring). ``deidentify``: write de-identified
    headers (:mod:`medbench.io.deid`). An ``out_dir`` inside ``path`` is left out of the scan.

    Series that fail are reported (status "failed" with the error) and the batch goes on.

    Returns:
        DataFrame[series_hash, source, output, status, error], one row per series.

    Raises:
        InputError: ``out_dir`` holds a run with other settings (every change listed).
    """
    import pandas as pd

    from medbench.parallel import Failure, check_executor, map_items

    check_executor(executor)
    groups = find_series(path, out_dir)
    inner_progress = progress and workers == 1 and executor == "local"  # per-slice bars only in-process
    kw = dict(params or {})
    if _learned(denoiser):
        kw.setdefault("progress", inner_progress)
    guards = {"strict_geometry": strict_geometry, "allow_noise_increase": allow_noise_increase,
              "deidentify": deidentify}
    key = f"{denoiser}:{sorted(kw.items())!r}"
    if key not in _DENOISERS:  # checked once up front (bad name, corrupt checkpoint), not per series
        _DENOISERS[key] = _create_checked(denoiser, kw)
    shown = {k: v for k, v in kw.items() if k != "progress"}
    settings = {"command": "apply", "input": str(Path(path).resolve()), "denoiser": denoiser, "params": shown,
                "checkpoint_sha256": file_fingerprint(shown.get("checkpoint")), "n0": n0,
                "strict_geometry": strict_geometry, "allow_noise_increase": allow_noise_increase,
                "deidentify": deidentify}
    out_root = Path(out_dir)
    names = {uid: series_folder(uid) for uid in groups}
    with open_run(out_root, WORKFLOW, settings, outputs=_own_outputs(out_root, names.values()),
                  restart=restart) as run:
        done = {uid for uid, name in names.items() if run.unit_done(name, settings, outputs=[f"{name}/{MARKER}"])}
        jobs = [(uid, files, str(out_root / names[uid]), denoiser, kw, n0, inner_progress, guards, run, settings)
                for uid, files in groups.items() if uid not in done]
        results = map_items(_denoise_job, jobs, workers=workers, executor=executor, scheduler=scheduler,
                            desc=f"denoise {denoiser}", progress=progress and len(jobs) > 1, isolate=True)
        status = {job[0]: res for job, res in zip(jobs, results, strict=True)}
        rows = []
        for uid, files in groups.items():
            res = status.get(uid, "skipped")
            failed = isinstance(res, Failure)
            rows.append({"series_hash": hash_id(uid), "source": files[0],
                         "output": "" if failed else str(out_root / names[uid]),
                         "status": "failed" if failed else res,
                         "error": f"{res.error}: {res.message}" if failed else ""})
        table = pd.DataFrame(rows)
        run.write_table(BATCH_LOG, table)
        run.write_metrics(_noise_metrics(out_root, names.values()))
    return table


def _noise_metrics(out_root: Path, names: Any) -> dict[str, Any]:
    """Flat soft-tissue noise SD before/after (HU) of every finished series, from its ``done.json``."""
    import json

    series = {}
    for name in sorted(names):
        marker = out_root / name / MARKER
        if marker.is_file():
            info = json.loads(marker.read_text(encoding="utf-8"))
            series[name] = {k: info.get(k) for k in ("denoiser", "noise_sd_before", "noise_sd_after")}
    return {"series": series}

"""The GPU check (issue 19): CUDA tests, engine and 2:4 benchmark, confounders on CUDA, one JSON.

Run through ``benchmarks/gpu_check.sh`` (which unpacks carried wheels first), or directly:

    python benchmarks/gpu_check.py --out OUT_DIR [--small] [--budget 330] [--steps pytest,confounders,gpu]

Steps, in this order (the longest last, so a time limit cuts the least):

1. ``pytest``: ``pytest -m gpu`` over every test file that carries the ``gpu`` marker (these are
   exactly the CUDA-skipped tests), junit XML in ``OUT/pytest_gpu.xml``;
2. ``confounders``: ``benchmarks/confounders.py --device cuda`` against the per-image CPU baseline,
   rows in ``OUT/confounders.json`` (goal: batched speed-up >= 20x for every artifact). Without
   CUDA it runs on the CPU as a rehearsal of the plumbing, and no goal is judged;
3. ``gpu``: ``benchmarks/gpu.py`` (engine images/s switch by switch, 2:4 vs dense fp16), figures in
   ``OUT/gpu_bench.json`` (rewritten after each configuration; goal: all switches >= 1.5x the
   plain fp32 loop). Without CUDA it says so and measures nothing.

Each step is a subprocess with its own time limit, cut to what is left of ``--budget``; the summary
``OUT/summary.json`` (environment, every step's status and every figure) is rewritten after each
step, so a run killed from outside still leaves what it finished. Exit status: 0 when every step
that ran finished and passed (or skipped for lack of CUDA), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

log = logging.getLogger("benchmarks.gpu_check")

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("pytest", "confounders", "gpu")
#: seconds per step at the full size; each is also capped by what is left of --budget
STEP_LIMITS = {"pytest": 90.0, "confounders": 60.0, "gpu": 210.0}
#: modules the CUDA paths import; a missing one names the wheel to carry (see gpu_check.sh)
NEEDED_MODULES = ("numpy", "pandas", "pyarrow", "scipy", "PIL", "timm", "hypothesis", "pytest",
                  "medbench.train.engine", "medbench.train.sparsity", "confounders.synthetic")
CONFOUNDER_GOAL = 20.0
ENGINE_GOAL = 1.5
PLAIN = "plain loop fp32"
ALL_ON = "engine all on (bf16, channels_last, compile)"


def _clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, allow_nan=False))
    tmp.replace(path)


def environment() -> dict[str, Any]:
    """Python, torch, CUDA device and the import check of NEEDED_MODULES."""
    import importlib

    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda_available": torch.cuda.is_available(), "cuda": torch.version.cuda,
                           "host": platform.node(), "cpu_count": os.cpu_count()}
    if env["cuda_available"]:
        env["device_name"] = torch.cuda.get_device_name()
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    try:
        env["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None  # the device copy may have no git metadata
    missing = {}
    for name in NEEDED_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # report any import failure, not only ImportError
            missing[name] = f"{type(exc).__name__}: {exc}"[:300]
    env["missing_modules"] = missing
    env["carried_wheels"] = os.environ.get("GPU_CHECK_WHEELS", "").split()
    return env


def run_step(cmd: list[str], limit: float, log_file: Path) -> dict[str, Any]:
    """Run ``cmd`` from the repository root with a time limit; output appended to ``log_file``."""
    t0 = time.perf_counter()
    with log_file.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}  (limit {limit:.0f} s)\n")
        fh.flush()
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}  # medbench is not installed there
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the step and any workers it started
            proc.wait()
            rc, timed_out = None, True
    return {"cmd": cmd, "rc": rc, "timed_out": timed_out, "wall_s": round(time.perf_counter() - t0, 1)}


def gpu_test_files() -> list[str]:
    """Test files that carry the ``gpu`` marker (relative to the repository root)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                  if "pytest.mark.gpu" in p.read_text(encoding="utf-8", errors="replace"))


def parse_junit(path: Path) -> dict[str, Any]:
    """Counts and per-test outcomes of a pytest junit XML file."""
    if not path.exists():
        return {"parsed": False}
    tests: dict[str, str] = {}
    failures: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                if tag != "skipped":
                    failures[name] = ((node.get("message") or "") + "\n" + (node.text or ""))[-1500:]
                else:
                    outcome += f" ({(node.get('message') or '')[:120]})"
                break
        tests[name] = outcome
    counts = {k: sum(v.split(" ")[0] == k for v in tests.values()) for k in ("passed", "failed", "error", "skipped")}
    return {"parsed": True, "counts": counts, "tests": tests, "failures": failures}


def judge_confounders(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Batched speed-up per artifact over the per-image CPU baseline, and the >= 20x goal."""
    speedup = {r["artifact"]: r["speedup"] for r in rows}
    return {"speedup": speedup,
            "goal": f"batched CUDA >= {CONFOUNDER_GOAL:g}x the per-image CPU baseline for every artifact",
            "goal_met": bool(speedup) and all(v >= CONFOUNDER_GOAL for v in speedup.values())}


def judge_engine(rates: dict[str, float]) -> dict[str, Any]:
    """Every configuration's rate over the plain fp32 loop, and the >= 1.5x goal for all switches on."""
    base = rates.get(PLAIN)
    if not base:
        return {}
    out: dict[str, Any] = {"vs_plain_fp32": {k: v / base for k, v in rates.items()}}
    if ALL_ON in rates:
        out["goal"] = f"engine with every switch >= {ENGINE_GOAL:g}x the plain fp32 loop"
        out["goal_met"] = rates[ALL_ON] / base >= ENGINE_GOAL
    return out


def _step_pytest(args: argparse.Namespace, limit: float, log_file: Path) -> dict[str, Any]:
    files = gpu_test_files()
    xml = args.out / "pytest_gpu.xml"
    xml.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "gpu", f"--junitxml={xml}", *files]
    res = {"files": files, **run_step(cmd, limit, log_file), **parse_junit(xml)}
    counts = res.get("counts", {})
    res["ok"] = res["rc"] == 0 and not counts.get("failed") and not counts.get("error")
    return res


def _step_confounders(args: argparse.Namespace, limit: float, log_file: Path, cuda: bool) -> dict[str, Any]:
    out = args.out / "confounders.json"
    out.unlink(missing_ok=True)
    size, batch, repeats = (64, 16, 1) if args.small else (256, 512, 3)
    cmd = [sys.executable, "benchmarks/confounders.py", "--device", "cuda" if cuda else "cpu", "--size", str(size),
           "--batch", str(batch), "--repeats", str(repeats), "--threads", "1", "--json", str(out)]
    res: dict[str, Any] = {**run_step(cmd, limit, log_file), "rehearsal_on_cpu": not cuda}
    if out.exists():
        data = json.loads(out.read_text())
        res["figures"] = data
        judged = judge_confounders(data["rows"])
        res["speedup"] = judged["speedup"]
        if cuda:  # a CPU rehearsal judges no goal
            res.update(judged)
    res["ok"] = res["rc"] == 0 and out.exists()
    return res


def _step_gpu(args: argparse.Namespace, limit: float, log_file: Path, cuda: bool) -> dict[str, Any]:
    out = args.out / "gpu_bench.json"
    out.unlink(missing_ok=True)
    if args.small:
        sizes = ["--arch", "resnet10t", "--size", "64", "--n", "128", "--batch-size", "32", "--epochs", "2",
                 "--sparse-features", "1024", "--sparse-layers", "2", "--sparse-batch", "1024", "--sparse-reps", "10"]
    else:  # resnet18 at 224 px, 1024 images x 2 epochs: a few minutes with two compilations
        sizes = ["--arch", "resnet18", "--size", "224", "--n", "1024", "--batch-size", "64", "--epochs", "2"]
    cmd = [sys.executable, "benchmarks/gpu.py", *sizes, "--json", str(out)]
    res: dict[str, Any] = run_step(cmd, limit, log_file)
    if not cuda:
        res.update(skipped="no CUDA GPU: gpu.py measured nothing", ok=res["rc"] == 0 and not out.exists())
        return res
    if out.exists():
        data = json.loads(out.read_text())
        res["figures"] = data
        res.update(judge_engine(data.get("images_per_s", {})))
    res["ok"] = res["rc"] == 0 and out.exists()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks/results/gpu_check"))
    ap.add_argument("--small", action="store_true", help="tiny sizes: a CPU rehearsal of the plumbing")
    ap.add_argument("--budget", type=float, default=330.0, help="seconds for all steps together")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    args = ap.parse_args(argv)
    # benchmarks/confounders.py would shadow the ``confounders`` package: import from the repository root
    sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "benchmarks")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        ap.error(f"unknown step(s) {unknown}: choose from {','.join(STEPS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    log_file = args.out / "steps.log"
    log_file.write_text("")
    t_start = time.perf_counter()
    env = environment()
    cuda = bool(env["cuda_available"])
    summary: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "small": args.small,
                               "budget_s": args.budget, "environment": env, "steps": {}}
    if not cuda:
        summary["note"] = "no CUDA on this machine: CUDA tests skip, gpu.py measures nothing, confounders rehearse on CPU"
    log.info("environment: %s", json.dumps(_clean(env)))
    summary_path = args.out / "summary.json"
    _write_json(summary_path, summary)
    for step in STEPS:
        if step not in steps:
            continue
        left = args.budget - (time.perf_counter() - t_start)
        if left < 5:
            summary["steps"][step] = {"ok": False, "not_run": "time budget spent"}
            continue
        limit = min(STEP_LIMITS[step], left) if not args.small else left
        log.info("step %s (limit %.0f s)", step, limit)
        if step == "pytest":
            res = _step_pytest(args, limit, log_file)
        elif step == "confounders":
            res = _step_confounders(args, limit, log_file, cuda)
        else:
            res = _step_gpu(args, limit, log_file, cuda)
        summary["steps"][step] = res
        log.info("step %s: ok=%s rc=%s %.1f s%s", step, res["ok"], res["rc"], res["wall_s"],
                 " (TIMED OUT)" if res["timed_out"] else "")
        _write_json(summary_path, summary)
    summary["wall_s"] = round(time.perf_counter() - t_start, 1)
    summary["ok"] = all(r.get("ok") for r in summary["steps"].values())
    _write_json(summary_path, summary)
    log.info("summary: %s (ok=%s, %.0f s)", summary_path, summary["ok"], summary["wall_s"])
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

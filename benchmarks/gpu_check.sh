#!/usr/bin/env bash
# The GPU check of issue 19 in one command: CUDA tests, confounders on CUDA, engine/2:4 benchmark.
#
# What it does: unpacks any carried wheels (wheels/*.whl) into a private site folder without
# network, puts that folder and the repository on PYTHONPATH, then runs benchmarks/gpu_check.py,
# which writes into $OUT (at most 6 files, all under the device tool's 8-file limit):
#   summary.json     environment, every step's status, every figure and the goals judged
#   pytest_gpu.xml   junit XML of `pytest -m gpu` (the CUDA-skipped tests)
#   confounders.json batched CUDA injectors vs the per-image CPU baseline
#   gpu_bench.json   engine images/s switch by switch, 2:4 semi-structured vs dense fp16
#   steps.log        the steps' own output;  gpu_check.log  this script's whole output
# Without CUDA every CUDA part skips (confounders rehearse on the CPU) and it exits 0 with
# summary.json saying "cuda_available": false. Exit 1 when a step failed or ran out of time.
#
# Time: the steps share GPU_CHECK_BUDGET seconds (default 330; pytest <= 90, confounders <= 60,
# gpu.py the rest), and a hard `timeout` of budget + 60 s stops everything. Expected wall time on
# the H200: about 5 minutes, so one 600 s device call leaves room for a rerun in a 15-minute lease.
#
# How the lead launches it (device tool `run`, from the checkout holding this script):
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=480, carry=[])
# With carried wheels, fill wheels/ here first, then name it in carry:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d wheels pydicom==3.0.2
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=480, carry=["wheels"])
# Measured minimal set (imports of the CUDA tests, gpu.py and confounders.py with every module the
# device image lacks blocked, 2026-12): none; summary.json's environment.missing_modules lists any
# needed module that is absent there (carry its wheel and its own needs). wheels/ is gitignored; keep it
# small (the carried tree must stay under 64 MiB) and hold one version of each package.
# Worst case the call lasts budget + 60 s plus the machine's start (1-2 min): about 8 minutes of
# the 15. A rerun of selected steps in what is left, e.g. only the benchmark:
#   run(command="GPU_CHECK_BUDGET=200 bash benchmarks/gpu_check.sh --steps gpu", timeout_s=300, carry=[])
# ($OUT comes back with the files listed above; summary.json is the one to read first.)
#
# CPU rehearsal here:  PYTHON=/work/main/.venv/bin/python bash benchmarks/gpu_check.sh --small
# (writes into benchmarks/results/gpu_check/ when $OUT is unset). Extra arguments go to gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-benchmarks/results/gpu_check}
SITE=${GPU_CHECK_SITE:-/tmp/medbench_site}
BUDGET=${GPU_CHECK_BUDGET:-330}
mkdir -p "$OUT_DIR"

shopt -s nullglob
wheels=(wheels/*.whl)
site_path=""
if ((${#wheels[@]})); then
    site_path=":$SITE"
    mkdir -p "$SITE"
    for w in "${wheels[@]}"; do  # a wheel is a zip laid out for site-packages: no pip, no network
        "$PY" -m zipfile -e "$w" "$SITE" || { echo "cannot unpack $w" >&2; exit 2; }
    done
    echo "unpacked ${#wheels[@]} wheel(s) into $SITE"
fi
export GPU_CHECK_WHEELS="${wheels[*]}"  # recorded in summary.json
export PYTHONPATH="$PWD$site_path${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 MPLBACKEND=Agg

timeout -k 10 $((BUDGET + 60)) "$PY" benchmarks/gpu_check.py --out "$OUT_DIR" --budget "$BUDGET" "$@" 2>&1 \
    | tee "$OUT_DIR/gpu_check.log"
rc=${PIPESTATUS[0]}
[ "$rc" = 124 ] && echo "gpu_check.py stopped by the hard time limit ($((BUDGET + 60)) s)" >&2
exit "$rc"

"""Measure ``medbench ingest --decode`` on a seeded fuzz corpus (issue 17).

Usage: python scripts/fuzz_ingest.py WORKDIR [--files 1500] [--seed 0] [--workers 2]

Prints files, ok, quarantined (by reason), crashes (ingest exit code other than 0, and files
quarantined as decoder_crash) and usable-but-undecodable (manifest files that do not decode to
finite pixels with pydicom and with medbench, checked in separate processes).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
from pathlib import Path

import pandas as pd

logger = logging.getLogger("fuzz_ingest")


def _module(name: str, path: Path):  # noqa: ANN202
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    """Build the corpus, ingest it with --decode and print the figures as JSON."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    tests = Path(__file__).resolve().parents[1] / "tests" / "io"
    corpus = _module("fuzz_corpus", tests / "fuzz_corpus.py")
    fuzz = _module("test_fuzz", tests / "test_fuzz.py")
    folder, run = args.workdir / f"corpus-{args.seed}-{args.files}", args.workdir / f"run-{args.seed}-{args.files}"
    if not folder.exists():
        corpus.build_corpus(folder, args.files, seed=args.seed)
    t0 = time.perf_counter()
    res = fuzz.run_ingest(folder, run, workers=args.workers)
    seconds = time.perf_counter() - t0
    manifest = pd.read_parquet(run / "manifest.parquet") if res.returncode == 0 else pd.DataFrame(columns=["path"])
    quarantine = pd.read_parquet(run / "quarantine.parquet") if res.returncode == 0 else pd.DataFrame(columns=["path", "reason"])
    bad = fuzz.undecodable_usable(manifest, workers=args.workers) if len(manifest) else {}
    figures = {
        "files": args.files, "seed": args.seed, "ingest_rc": res.returncode, "ingest_seconds": round(seconds, 1),
        "ok": len(manifest), "quarantined": len(quarantine),
        "accounted_once": sorted(list(manifest["path"]) + list(quarantine["path"]))
        == sorted(str(p.resolve()) for p in folder.iterdir()),
        "by_reason": {str(k): int(v) for k, v in quarantine["reason"].value_counts().sort_index().items()},
        "crashes": {"ingest_nonzero_exit": int(res.returncode != 0),
                    "decoder_crash_files": int((quarantine["reason"] == "decoder_crash").sum())},
        "usable_but_undecodable": len(bad), "undecodable_examples": dict(list(bad.items())[:5]),
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

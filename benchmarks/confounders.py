"""Benchmark: batched torch injection vs a per-image PIL/NumPy implementation of the same artifact.

Run:  .venv/bin/python benchmarks/confounders.py [--size 256] [--batch 256] [--threads 1]

For each artifact both implementations run on the same images in one process; the script checks
that they agree (max abs difference) and prints images/s and the speed-up.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

# this file shares its name with the ``confounders`` package: keep its folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from confounders.synthetic import create_confounder  # noqa: E402
from confounders.tags import font_path  # noqa: E402


def _per_image_tag(size: int) -> Callable[[np.ndarray, str], np.ndarray]:
    """Draw "R" with PIL on each image (font loaded once), blend with NumPy."""
    s = size / 1024
    fnt = ImageFont.truetype(font_path("sans-light"), max(1, round(64 * s)))
    x0, y0 = round(200 * s), round(200 * s)

    def run(img: np.ndarray, uid: str) -> np.ndarray:
        pad = fnt.size
        glyph = Image.new("L", (4 * pad, 4 * pad), 0)
        ImageDraw.Draw(glyph).text((pad, pad), "R", font=fnt, fill=255)
        glyph = glyph.crop(glyph.getbbox())  # ink box, its top-left goes to (x0, y0)
        canvas = Image.new("L", (img.shape[1], img.shape[0]), 0)
        canvas.paste(glyph, (x0, y0))
        m = np.asarray(canvas, dtype=np.float32) / 255.0
        return img + m * (1.0 - img)

    return run


def _per_image_lowpass(size: int) -> Callable[[np.ndarray, str], np.ndarray]:
    """NumPy FFT per image with the ideal disk of radius 250/512 Nyquist."""
    f = np.fft.fftfreq(size) / 0.5
    mask = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) <= 250 / 512

    def run(img: np.ndarray, uid: str) -> np.ndarray:
        return np.clip(np.real(np.fft.ifft2(np.fft.fft2(img) * mask)), 0, 1).astype(np.float32)

    return run


def _per_image_poisson(size: int) -> Callable[[np.ndarray, str], np.ndarray]:
    """NumPy Poisson counts per image (per-uid Generator), same mapping as confounders.noise."""
    from medbench.utils.rng import numpy_rng

    n0, mu = 1.5e7, 12.0

    def run(img: np.ndarray, uid: str) -> np.ndarray:
        c = numpy_rng(0, "poisson", uid).poisson(n0 * np.exp(-mu * img.astype(np.float64)))
        return np.clip(-np.log(np.maximum(c, 1) / n0) / mu, 0, 1).astype(np.float32)

    return run


def _per_image_jpeg(size: int) -> Callable[[np.ndarray, str], np.ndarray]:
    """PIL JPEG encode/decode per image at quality 20."""
    import io

    def run(img: np.ndarray, uid: str) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, "JPEG", quality=20)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255

    return run


ARTIFACTS: dict[str, tuple[str, dict, Callable[[int], Callable[[np.ndarray, str], np.ndarray]]]] = {
    "tag": ("paper-tag", {}, _per_image_tag),
    "lowpass": ("paper-lowpass", {}, _per_image_lowpass),
    "poisson": ("paper-noise", {}, _per_image_poisson),
    "jpeg": ("jpeg", {"quality": 20}, _per_image_jpeg),
}


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--artifacts", nargs="*", default=list(ARTIFACTS))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    imgs = (0.2 + 0.6 * rng.random((args.batch, args.size, args.size))).astype(np.float32)
    uids = [f"u{i}" for i in range(args.batch)]
    x = torch.from_numpy(imgs)[:, None].to(args.device)
    print(f"batch {args.batch} x {args.size}px, torch threads {args.threads}, device {args.device}")
    print(f"{'artifact':10s} {'batched img/s':>14s} {'in-place img/s':>15s} {'per-image img/s':>16s} "
          f"{'speed-up':>9s} {'in-place':>9s} {'max |diff|':>11s}")
    for name in args.artifacts:
        preset, kw, make_ref = ARTIFACTS[name]
        conf = create_confounder(preset, **kw)
        conf(x[:2], uids[:2])  # warm caches (glyph, masks)
        ref_fn = make_ref(args.size)
        t_batch = _best_time(lambda c=conf: c(x, uids), args.repeats)
        work = x.clone()
        t_inpl = _best_time(lambda c=conf, w=work: c(w, uids, inplace=True), args.repeats)
        t_ref = _best_time(lambda f=ref_fn: [f(im, u) for im, u in zip(imgs, uids)], max(1, args.repeats - 2))
        out = conf(x, uids)[:, 0].cpu().numpy()
        ref = np.stack([ref_fn(im, u) for im, u in zip(imgs[:8], uids[:8])])
        diff = float(np.abs(out[:8] - ref).max()) if name not in ("poisson",) else float("nan")
        print(f"{name:10s} {args.batch / t_batch:14.1f} {args.batch / t_inpl:15.1f} {args.batch / t_ref:16.1f} "
              f"{t_ref / t_batch:8.1f}x {t_ref / t_inpl:8.1f}x {diff:11.2e}")


if __name__ == "__main__":
    main()

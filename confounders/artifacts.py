"""Other environment-level artifacts: a chest-drain/line stroke, a collimation border, a vendor
intensity curve and JPEG compression (a torch block-DCT codec, grayscale, IJG quality tables)."""

from __future__ import annotations

import functools
import math

import torch

from confounders.base import Confounder, check_fraction, check_positive, register_confounder
from medbench.errors import InputError


@register_confounder("drain")
class DrainLine(Confounder):
    """A chest-drain / line-like curved stroke (quadratic Bezier) with per-sample random shape.

    Args:
        width: Stroke width in reference pixels.
        intensity: Stroke grey value in [0, 1].
        opacity: Blend weight in [0, 1].
        segments: Polyline segments used to draw the curve.
    """

    miccat = ("environment", "external", "devices")
    deterministic = False

    def __init__(self, *, width: float = 10.0, intensity: float = 0.95, opacity: float = 1.0,
                 segments: int = 24, seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        self.width = check_positive(width, "width")
        self.intensity = check_fraction(intensity, "intensity")
        self.opacity = check_fraction(opacity, "opacity")
        self.segments = int(check_positive(segments, "segments"))

    def control_points(self, uids: list[str]) -> torch.Tensor:
        """(B, 3, 2) Bezier control points as (y, x) fractions of the image size."""
        u = self.uniform(uids, 5, torch.device("cpu")).double()
        start = torch.stack([torch.zeros_like(u[:, 0]), 0.55 + 0.3 * u[:, 0]], 1)  # enters at the top
        end = torch.stack([0.55 + 0.3 * u[:, 1], 0.5 + 0.35 * u[:, 2]], 1)
        mid = torch.stack([0.2 + 0.4 * u[:, 3], 0.35 + 0.6 * u[:, 4]], 1)
        return torch.stack([start, mid, end], 1)

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        B, _, H, W = images.shape
        dev = images.device
        cp = self.control_points(uids).to(dev)
        t = torch.linspace(0, 1, self.segments + 1, device=dev, dtype=torch.float64)[None, :, None]
        pts = (1 - t) ** 2 * cp[:, :1] + 2 * (1 - t) * t * cp[:, 1:2] + t**2 * cp[:, 2:3]
        pts = (pts * torch.tensor([H, W], device=dev, dtype=torch.float64)).float()  # (B, S+1, 2)
        yy = torch.arange(H, device=dev, dtype=torch.float32).view(1, H, 1) + 0.5
        xx = torch.arange(W, device=dev, dtype=torch.float32).view(1, 1, W) + 0.5
        dist = torch.full((B, H, W), float("inf"), device=dev)
        for s in range(self.segments):
            a, b = pts[:, s], pts[:, s + 1]
            d = b - a
            ay, ax = a[:, 0].view(B, 1, 1), a[:, 1].view(B, 1, 1)
            dy, dx = d[:, 0].view(B, 1, 1), d[:, 1].view(B, 1, 1)
            t_ = (((yy - ay) * dy + (xx - ax) * dx) / (dy * dy + dx * dx).clamp_min(1e-9)).clamp(0, 1)
            dist = torch.minimum(dist, torch.hypot(yy - ay - t_ * dy, xx - ax - t_ * dx))
        half = 0.5 * self.width * min(H, W) / self.ref_size
        mask = ((half + 0.5 - dist).clamp(0, 1) * self.opacity)[:, None].to(images.dtype)
        return images + mask * (self.intensity - images)


@register_confounder("collimation")
class Collimation(Confounder):
    """A collimation border: each side covered over a per-sample random fraction of the size.

    Args:
        min_frac: Smallest border per side, as a fraction of the image size.
        max_frac: Largest border per side.
        intensity: Border grey value (unexposed film/detector reads bright after inversion).
    """

    miccat = ("environment", "imaging", "acquisition")
    deterministic = False

    def __init__(self, *, min_frac: float = 0.03, max_frac: float = 0.1, intensity: float = 0.9,
                 seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        self.min_frac = check_fraction(min_frac, "min_frac")
        self.max_frac = check_fraction(max_frac, "max_frac")
        if self.min_frac > self.max_frac or self.max_frac >= 0.5:
            raise InputError(f"need 0 <= min_frac <= max_frac < 0.5; got {min_frac}, {max_frac}")
        self.intensity = check_fraction(intensity, "intensity")

    def borders(self, uids: list[str], h: int, w: int) -> torch.Tensor:
        """(B, 4) integer border widths (top, bottom, left, right) in pixels."""
        u = self.uniform(uids, 4, torch.device("cpu")).double()
        frac = self.min_frac + (self.max_frac - self.min_frac) * u
        size = torch.tensor([h, h, w, w], dtype=torch.float64)
        return torch.round(frac * size).long()

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        B, _, H, W = images.shape
        b = self.borders(uids, H, W).to(images.device)
        yy = torch.arange(H, device=images.device).view(1, H, 1)
        xx = torch.arange(W, device=images.device).view(1, 1, W)
        m = ((yy < b[:, 0].view(B, 1, 1)) | (yy >= H - b[:, 1].view(B, 1, 1))
             | (xx < b[:, 2].view(B, 1, 1)) | (xx >= W - b[:, 3].view(B, 1, 1)))
        return images.masked_fill_(m[:, None], self.intensity)  # images is the output buffer


VENDOR_CURVE_NAMES = ("gamma", "sigmoid", "log", "inverse_s")


def vendor_curve(x: torch.Tensor, curve: str, strength: float) -> torch.Tensor:
    """Monotone map of [0, 1] onto [0, 1] fixing 0 and 1.

    gamma: ``x^strength``; sigmoid: logistic contrast of slope ``strength`` rescaled to [0, 1];
    log: ``log1p(strength x) / log1p(strength)``; inverse_s: the inverse of the sigmoid curve.
    """
    if curve == "gamma":
        return x.clamp_min(0) ** strength
    if curve == "log":
        return torch.log1p(strength * x) / math.log1p(strength)
    lo, hi = 1 / (1 + math.exp(strength / 2)), 1 / (1 + math.exp(-strength / 2))
    if curve == "sigmoid":
        return (torch.sigmoid(strength * (x - 0.5)) - lo) / (hi - lo)
    if curve == "inverse_s":
        y = (lo + x * (hi - lo)).clamp(1e-7, 1 - 1e-7)
        return 0.5 + torch.logit(y) / strength
    raise InputError(f"curve must be one of {VENDOR_CURVE_NAMES}; got {curve!r}")


@register_confounder("vendor-curve")
class VendorCurve(Confounder):
    """A vendor's intensity look: a monotone grey-level curve (see :func:`vendor_curve`)."""

    miccat = ("environment", "imaging", "vendor")

    def __init__(self, *, curve: str = "gamma", strength: float = 0.6, seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        if curve not in VENDOR_CURVE_NAMES:
            raise InputError(f"curve must be one of {VENDOR_CURVE_NAMES}; got {curve!r}")
        self.curve = curve
        self.strength = check_positive(strength, "strength")

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        return vendor_curve(images, self.curve, self.strength)


# IJG (libjpeg) standard luminance quantisation table, quality 50.
_JPEG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)


def jpeg_quant_table(quality: int) -> torch.Tensor:
    """(8, 8) luminance table for IJG ``quality`` in [1, 100]."""
    q = int(quality)
    s = 5000 / q if q < 50 else 200 - 2 * q
    t = torch.floor((torch.tensor(_JPEG_LUMA, dtype=torch.float64) * s + 50) / 100).clamp(1, 255)
    return t.view(8, 8)


@functools.lru_cache(maxsize=32)
def _jpeg_operators(quality: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 (K^T, K, 1/Q, Q): forward/inverse 2-D DCT of flattened blocks and the (64,) table."""
    i = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * i[None, :] + 1) * i[:, None] * math.pi / 16) * math.sqrt(2 / 8)  # 1-D DCT-II
    d[0] /= math.sqrt(2)
    k = torch.kron(d, d).to(device)
    q = jpeg_quant_table(quality).to(device).reshape(64)
    return k.T.float().contiguous(), k.float().contiguous(), (1 / q).float(), q.float()


@register_confounder("jpeg")
class JpegCompression(Confounder):
    """Baseline JPEG compression of each channel at IJG ``quality`` (8-bit, 8x8 block DCT,
    quantise/dequantise, no chroma subsampling), computed in torch on the input's device.

    The block DCT is one (N, 64) x (64, 64) GEMM each way in float32: a coefficient within ~1e-4
    of a rounding tie (about 1 in 1e5) may quantise to the neighbouring level, as it may between
    real codecs (libjpeg's integer DCT differs from the exact one by far more).
    """

    miccat = ("environment", "imaging", "acquisition")
    keeps_range = True  # the decoder clamps to [0, 255] / 255

    def __init__(self, *, quality: int = 20, seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        if not 1 <= int(quality) <= 100:
            raise InputError(f"quality must be an integer in [1, 100]; got {quality!r}")
        self.quality = int(quality)

    def apply_into(self, src: torch.Tensor, dst: torch.Tensor, uids: list[str]) -> torch.Tensor:
        B, C, H, W = src.shape
        kt, k, qinv, q = _jpeg_operators(self.quality, str(src.device))
        x = torch.mul(src, 255.0, out=torch.empty(src.shape, dtype=torch.float32, device=src.device))
        x.round_().sub_(128.0)  # level shift of the 8-bit samples
        ph, pw = (-H) % 8, (-W) % 8
        if ph or pw:
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
        Hp, Wp = x.shape[-2:]
        blocks = x.view(B, C, Hp // 8, 8, Wp // 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(-1, 64)
        coef = blocks @ kt
        coef.mul_(qinv).round_().mul_(q)  # quantise / dequantise
        rec = (coef @ k).view(B, C, Hp // 8, Wp // 8, 8, 8).permute(0, 1, 2, 4, 3, 5)
        if not (ph or pw) and dst.is_contiguous():
            dst.view(B, C, H // 8, 8, W // 8, 8).copy_(rec)
        else:
            dst.copy_(rec.reshape(B, C, Hp, Wp)[..., :H, :W])
        return dst.add_(128.0).round_().clamp_(0.0, 255.0).div_(255.0)

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        return self.apply_into(images, images, uids)

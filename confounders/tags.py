"""Burned-in text confounders: a letter tag, laterality markers and text blocks.

Glyph masks are rendered once per (text, font, pixel size) with PIL, cropped to the ink bounding
box, cached, and composited on the whole batch with torch: ``out = x + opacity * m * (v - x)``
where ``m`` is the anti-aliased mask and ``v`` the tag intensity. Position and size are given in
pixels of the ``ref_size`` image and scale with the actual size; ``position`` is the top-left corner
of the glyph's ink bounding box, ``size`` the font size (em height) in reference pixels.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch

from confounders.base import Confounder, check_fraction, check_positive, register_confounder
from medbench.errors import InputError

logger = logging.getLogger(__name__)

_SYSTEM_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts/dejavu")
_FONT_FILES = {
    "sans-light": ("DejaVuSans-ExtraLight.ttf", "DejaVuSans.ttf"),
    "sans": ("DejaVuSans.ttf",),
    "sans-bold": ("DejaVuSans-Bold.ttf",),
    "mono": ("DejaVuSansMono.ttf",),
}
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


@functools.cache
def font_path(font: str) -> str:
    """Resolve a font name ("sans-light", "sans", "sans-bold", "mono") or a .ttf path to a file.

    "sans-light" is DejaVu Sans ExtraLight when the system has it, else matplotlib's DejaVu Sans
    (the closest face that is always available), with a log message.
    """
    if font.endswith((".ttf", ".otf")):
        if not Path(font).is_file():
            raise InputError(f"font file {font!r} does not exist: pass a .ttf path or one of {sorted(_FONT_FILES)}")
        return font
    if font not in _FONT_FILES:
        from medbench.registry import did_you_mean

        raise InputError(f"unknown font {font!r}: {did_you_mean(font, list(_FONT_FILES))}")
    import matplotlib

    dirs = [*_SYSTEM_FONT_DIRS, str(Path(matplotlib.get_data_path()) / "fonts" / "ttf")]
    for i, fname in enumerate(_FONT_FILES[font]):
        for d in dirs:
            p = Path(d) / fname
            if p.is_file():
                if i > 0:
                    logger.info("font %r: %s not found, using %s", font, _FONT_FILES[font][0], p)
                return str(p)
    raise InputError(f"no font file found for {font!r}; pass a .ttf path")


@functools.lru_cache(maxsize=256)
def render_glyph(text: str, font: str, size_px: int, box: bool = False) -> np.ndarray:
    """Anti-aliased mask (h, w) float32 in [0, 1] of ``text`` cropped to its ink bounding box.

    Args:
        text: Text, may contain newlines.
        font: Font name or path (see :func:`font_path`).
        size_px: Font size in pixels (>= 1).
        box: Draw a rectangle around the text (laterality-marker style).
    """
    from PIL import Image, ImageDraw, ImageFont

    size_px = max(1, int(size_px))
    fnt = ImageFont.truetype(font_path(font), size_px)
    lines = text.split("\n")
    pad = size_px
    width = int(max(fnt.getlength(line) for line in lines)) + 2 * pad + 2
    height = int(len(lines) * size_px * 1.4) + 2 * pad + 2
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    draw.multiline_text((pad, pad), text, font=fnt, fill=255, spacing=max(1, size_px // 4))
    bbox = canvas.getbbox()
    if bbox is None:
        raise InputError(f"text {text!r} renders no ink at size {size_px}px: use visible characters")
    if box:
        m = max(1, size_px // 6)
        x0, y0, x1, y1 = bbox
        line = max(1, size_px // 16)
        draw.rectangle((x0 - m, y0 - m, x1 - 1 + m, y1 - 1 + m), outline=255, width=line)
        bbox = canvas.getbbox()
    mask = np.asarray(canvas.crop(bbox), dtype=np.float32) / 255.0
    mask.setflags(write=False)
    return mask


@functools.lru_cache(maxsize=512)
def glyph_tensor(text: str, font: str, size_px: int, box: bool, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """The cached glyph mask as a tensor on ``device``."""
    return torch.from_numpy(render_glyph(text, font, int(size_px), box).copy()).to(device=device, dtype=dtype)


def composite(out: torch.Tensor, mask: torch.Tensor, y: int, x: int, value: float,
              opacity: float, rows: slice | list[int] | None = None) -> None:
    """In place: blend ``value`` through ``mask`` (h, w) at top-left (y, x) into ``out`` (B, C, H, W).

    Parts of the mask outside the image are dropped.
    """
    H, W = out.shape[-2:]
    h, w = mask.shape
    y0, x0 = max(y, 0), max(x, 0)
    y1, x1 = min(y + h, H), min(x + w, W)
    if y1 <= y0 or x1 <= x0:
        return
    m = mask[y0 - y : y1 - y, x0 - x : x1 - x] * opacity
    sel = slice(None) if rows is None else rows
    region = out[sel, :, y0:y1, x0:x1]
    region = region + m * (value - region)
    out[sel, :, y0:y1, x0:x1] = region


class _GlyphConfounder(Confounder):
    """Shared logic: render a glyph at a scaled size and composite it at a (jittered) position."""

    box: bool = False
    in_place_apply = True
    keeps_range = True  # convex blend of in-range values
    chunk_elems = 1 << 20  # no temporaries: per-chunk overhead dominates, so larger chunks

    def __init__(self, *, text: str, size: float, intensity: float = 1.0, opacity: float = 1.0,
                 font: str = "sans-light", jitter: float = 0.0, seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(seed=seed, ref_size=ref_size)
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"text must be a non-empty string; got {text!r}")
        self.text = text
        self.size = check_positive(size, "size")
        self.intensity = check_fraction(intensity, "intensity")
        self.opacity = check_fraction(opacity, "opacity")
        font_path(font)  # fail early on unknown fonts
        self.font = font
        self.jitter = float(jitter)
        if self.jitter < 0:
            raise InputError(f"jitter must be >= 0 reference pixels; got {jitter!r}")

    @property
    def deterministic(self) -> bool:  # type: ignore[override]
        """True without jitter (the same position on every image)."""
        return self.jitter == 0

    def size_px(self, images: torch.Tensor) -> int:
        h, w = images.shape[-2:]
        return max(1, round(self.size * min(h, w) / self.ref_size))

    def top_left(self, images: torch.Tensor, mask_hw: tuple[int, int]) -> tuple[float, float]:
        """(y, x) of the ink box's top-left corner in this image's pixels, before jitter."""
        raise NotImplementedError

    def apply(self, images: torch.Tensor, uids: list[str]) -> torch.Tensor:
        out = images  # the caller's output buffer: composite in place
        mask = glyph_tensor(self.text, self.font, self.size_px(images), self.box, images.device, images.dtype)
        y, x = self.top_left(images, tuple(mask.shape))
        if self.jitter == 0:
            composite(out, mask, round(y), round(x), self.intensity, self.opacity)
            return out
        sy, sx = self.scale(images)
        u = self.uniform(uids, 2, torch.device("cpu")) * 2 - 1
        for i in range(len(uids)):
            dy, dx = float(u[i, 0]) * self.jitter * sy, float(u[i, 1]) * self.jitter * sx
            composite(out, mask, round(y + dy), round(x + dx), self.intensity, self.opacity, rows=[i])
        return out

    def bbox(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Expected ink box (y0, x0, y1, x1) without jitter on a ``height`` x ``width`` image."""
        probe = torch.zeros(1, 1, height, width)
        mask = render_glyph(self.text, self.font, self.size_px(probe), self.box)
        y, x = self.top_left(probe, mask.shape)
        return round(y), round(x), round(y) + mask.shape[0], round(x) + mask.shape[1]


@register_confounder("tag")
class TextTag(_GlyphConfounder):
    """A letter or word burned into the image (the paper's "R": see preset "paper-tag").

    Args:
        text: The tag text.
        size: Font size in reference pixels (64 at 1024 px in the paper).
        position: (x, y) of the ink box's top-left corner in reference pixels ((200, 200)).
        intensity: Tag grey value in [0, 1] (1 = white).
        opacity: Blend weight in [0, 1].
        font: "sans-light" (DejaVu Sans ExtraLight), "sans", "sans-bold", "mono" or a .ttf path.
        jitter: Per-sample uniform offset in +-jitter reference pixels (0 = fixed position).
    """

    miccat = ("environment", "external", "tags")

    def __init__(self, *, text: str = "R", size: float = 64.0, position: tuple[float, float] = (200.0, 200.0),
                 intensity: float = 1.0, opacity: float = 1.0, font: str = "sans-light", jitter: float = 0.0,
                 seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(text=text, size=size, intensity=intensity, opacity=opacity, font=font,
                         jitter=jitter, seed=seed, ref_size=ref_size)
        if len(position) != 2:
            raise InputError(f"position must be (x, y) in reference pixels; got {position!r}")
        self.position = (float(position[0]), float(position[1]))

    def top_left(self, images: torch.Tensor, mask_hw: tuple[int, int]) -> tuple[float, float]:
        sy, sx = self.scale(images)
        return self.position[1] * sy, self.position[0] * sx


class _CornerGlyph(_GlyphConfounder):
    def __init__(self, *, corner: str, margin: float, **kw) -> None:
        super().__init__(**kw)
        if corner not in CORNERS:
            raise InputError(f"corner must be one of {CORNERS}; got {corner!r}")
        self.corner = corner
        self.margin = float(margin)

    def top_left(self, images: torch.Tensor, mask_hw: tuple[int, int]) -> tuple[float, float]:
        sy, sx = self.scale(images)
        H, W = images.shape[-2:]
        y = self.margin * sy if self.corner.startswith("top") else H - self.margin * sy - mask_hw[0]
        x = self.margin * sx if self.corner.endswith("left") else W - self.margin * sx - mask_hw[1]
        return y, x


@register_confounder("laterality")
class LateralityMarker(_CornerGlyph):
    """A boxed laterality marker ("L"/"R") near a corner.

    Args:
        side: "L" or "R" (the marker letter).
        corner: One of "top-left", "top-right", "bottom-left", "bottom-right".
        margin: Distance from the image edges in reference pixels.
        size: Font size in reference pixels.
    """

    miccat = ("environment", "external", "markers")
    box = True

    def __init__(self, *, side: str = "L", corner: str = "top-right", margin: float = 60.0, size: float = 56.0,
                 intensity: float = 1.0, opacity: float = 1.0, font: str = "sans-bold", jitter: float = 0.0,
                 seed: int = 0, ref_size: int = 1024) -> None:
        if side not in ("L", "R"):
            raise InputError(f"side must be 'L' or 'R'; got {side!r}")
        super().__init__(corner=corner, margin=margin, text=side, size=size, intensity=intensity,
                         opacity=opacity, font=font, jitter=jitter, seed=seed, ref_size=ref_size)


@register_confounder("text-block")
class TextBlock(_CornerGlyph):
    """A burned-in block of text lines (e.g. "PORTABLE\\nAP SUPINE") near a corner."""

    miccat = ("environment", "external", "tags")

    def __init__(self, *, text: str = "PORTABLE\nAP SUPINE", corner: str = "top-left", margin: float = 40.0,
                 size: float = 32.0, intensity: float = 1.0, opacity: float = 1.0, font: str = "mono",
                 jitter: float = 0.0, seed: int = 0, ref_size: int = 1024) -> None:
        super().__init__(corner=corner, margin=margin, text=text, size=size, intensity=intensity,
                         opacity=opacity, font=font, jitter=jitter, seed=seed, ref_size=ref_size)

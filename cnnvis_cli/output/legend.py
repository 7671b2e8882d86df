"""A legend strip under a picture: what it shows, and a colour bar with the range it spans.

``--legend`` adds it under each overlay (on by default for ``compare`` panels and for runs with
``--report``; off for plain overlays, so they keep the input's pixel size). The strip is as wide
as the picture and has two rows: a line of text (method, class, score) and a colour bar with its
range at both ends — ``0`` .. ``1`` for heatmaps, ``-1`` .. ``+1`` for signed maps (occlusion
``--signed``: blue, white, red; zero is transparent over the image), ``-`` .. ``+`` for gradient
maps (centred on grey). Its size follows the picture's width so it stays legible on small and
large images alike. Text is drawn with OpenCV's Hershey font (ASCII; other characters become
``?``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
BACKGROUND = 255
INK = (25, 25, 25)
RANGES = {"heatmap": ("0", "1"), "signed": ("-1", "+1"), "gradient": ("-", "+")}


@dataclass(frozen=True)
class LegendLayout:
    """Geometry of a legend strip of a given width (pixels; boxes are x0, y0, x1, y1 with the
    ends exclusive)."""

    width: int
    height: int
    scale: float  # font scale
    text_height: int  # the text row (0 when there is no text)
    bar: tuple[int, int, int, int]  # the colour bar


def font_scale(width: int) -> float:
    """Font scale for a strip ``width`` pixels wide: 0.35 (narrow) .. 0.7 (640 px and wider)."""
    return float(np.clip(width / 900.0, 0.35, 0.7))


def _text_size(text: str, scale: float) -> tuple[int, int]:
    (w, h), _ = cv2.getTextSize(text, FONT, scale, 1)
    return w, h


def legend_layout(width: int, kind: str = "heatmap", text: bool = True) -> LegendLayout:
    """Where the text row and the colour bar of a strip ``width`` pixels wide go."""
    scale = font_scale(width)
    _, glyph = _text_size("Ag", scale)
    pad = max(2, round(glyph * 0.5))
    text_height = glyph * 2 + pad if text else 0
    low, high = RANGES.get(kind, RANGES["heatmap"])
    left = _text_size(low, scale)[0] + 2 * pad
    right = _text_size(high, scale)[0] + 2 * pad
    bar_height = max(6, glyph + pad)
    top = text_height + pad
    x0, x1 = min(left, width // 3), max(width - right, 2 * width // 3)
    bar = (x0, top, max(x0 + 1, x1), top + bar_height)
    return LegendLayout(width, top + bar_height + pad, scale, text_height, bar)


def _fit(text: str, width: int, scale: float) -> str:
    text = text.encode("ascii", "replace").decode()
    while len(text) > 1 and _text_size(text, scale)[0] > width:
        text = text[:-2] + "~"
    return text


def _bar_colours(kind: str, length: int, colormap: str) -> np.ndarray:
    """(length, 3) uint8 RGB: the colours the overlay uses from the low end to the high end."""
    from cnnvis_cli.output.render import DIVERGING, colorize

    ramp = np.linspace(0.0, 1.0, length, dtype=np.float32)[None, :]
    if kind == "gradient":
        grey = np.clip(ramp * 255.0 + 0.5, 0, 255).astype(np.uint8)[0]
        return np.repeat(grey[:, None], 3, axis=1)
    return colorize(ramp, DIVERGING if kind == "signed" else colormap)[0]


def legend_strip(
    width: int, kind: str = "heatmap", colormap: str = "jet", text: str | None = None
) -> np.ndarray:
    """The strip (H x width x 3 uint8 RGB): ``text`` on top (if given), then the colour bar."""
    layout = legend_layout(width, kind, text is not None)
    strip = np.full((layout.height, width, 3), BACKGROUND, np.uint8)
    x0, y0, x1, y1 = layout.bar
    strip[y0:y1, x0:x1] = _bar_colours(kind, x1 - x0, colormap)[None]
    low, high = RANGES.get(kind, RANGES["heatmap"])
    _, glyph = _text_size("Ag", layout.scale)
    baseline = (y0 + y1 + glyph) // 2
    pad = max(2, round(glyph * 0.5))
    cv2.putText(strip, low, (pad, baseline), FONT, layout.scale, INK, 1, cv2.LINE_AA)
    cv2.putText(strip, high, (x1 + pad, baseline), FONT, layout.scale, INK, 1, cv2.LINE_AA)
    if text is not None:
        line = _fit(text, width - 2 * pad, layout.scale)
        cv2.putText(
            strip, line, (pad, pad + glyph + glyph // 2), FONT, layout.scale, INK, 1, cv2.LINE_AA
        )
    return strip


def with_legend(
    picture: np.ndarray, kind: str = "heatmap", colormap: str = "jet", text: str | None = None
) -> np.ndarray:
    """``picture`` with a legend strip of its own width appended below it."""
    return np.vstack([picture, legend_strip(picture.shape[1], kind, colormap, text)])

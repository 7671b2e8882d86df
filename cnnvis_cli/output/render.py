"""Turn explanation maps into pictures.

Heatmaps in [0, 1] are resized to the input image's own resolution (:func:`resize_map`: bilinear
with half-pixel centres by default), coloured with an OpenCV colormap and alpha-blended over the
image. Signed heatmaps in [-1, 1] use a blue-white-red diverging colormap blended with an opacity
proportional to |value| (zero is transparent, so the photo shows through where nothing changes).
Gradient maps (guided back-propagation) are centred on grey and contrast-normalized.

Before colouring, :func:`display_maps` puts an image's maps on a common footing: ``--scale
joint`` multiplies target k's map by ``scales[k] / max(scales)`` (the methods' own
normalisation divisors, see ``Explanation.scales``), so the second-best class of ``--top-k``
looks weaker than the best instead of equally strong; pixel-level maps (saliency, SmoothGrad,
Integrated Gradients) are clipped at a percentile (``--clip``, 99 by default) so a few extreme
pixels do not leave the rest of the map faint (Smilkov et al., 2017; Captum's
``visualize_image_attr`` ``outlier_perc``). Both only change the picture, not ``--save-raw``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from cnnvis_cli.output.files import atomic_write
from cnnvis_cli.output.legend import legend_strip

EPSILON = 1e-8

COLORMAPS: dict[str, int] = {
    name[len("COLORMAP_") :].lower(): getattr(cv2, name)
    for name in dir(cv2)
    if name.startswith("COLORMAP_")
}


DIVERGING = "diverging"


def _diverging_lut() -> np.ndarray:
    """A 256-entry blue -> white -> red lookup table (BGR), for signed maps centred on 0.5."""
    t = np.linspace(-1.0, 1.0, 256, dtype=np.float32)
    red = np.where(t < 0, 1.0 + t, 1.0)
    blue = np.where(t > 0, 1.0 - t, 1.0)
    green = 1.0 - np.abs(t)
    bgr = np.stack([blue, green, red], axis=-1) * 255.0
    return bgr.round().astype(np.uint8).reshape(256, 1, 3)


def colormap_code(name: str) -> int | np.ndarray:
    """OpenCV colormap for a name such as ``jet``, ``turbo``, ``viridis`` (or ``diverging``)."""
    if name.lower() == DIVERGING:
        return _diverging_lut()
    try:
        return COLORMAPS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown colormap {name!r}; choose one of {', '.join(sorted(COLORMAPS))}, {DIVERGING}"
        ) from None


UPSAMPLE_MODES = ("bilinear", "bicubic", "corners")


def _keys_cubic(distance: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5, as TensorFlow's half-pixel bicubic)."""
    d = np.abs(distance)
    near = (a + 2) * d**3 - (a + 3) * d**2 + 1
    far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _cubic_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of half-pixel bicubic resampling; taps outside the map are
    dropped and the remaining weights renormalised to sum to 1 (TensorFlow's border rule)."""
    source = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    base = np.floor(source).astype(np.int64)
    matrix = np.zeros((size_out, size_in))
    for offset in (-1, 0, 1, 2):
        index = base + offset
        inside = (index >= 0) & (index < size_in)
        weight = np.where(inside, _keys_cubic(source - index), 0.0)
        np.add.at(matrix, (np.arange(size_out), np.clip(index, 0, size_in - 1)), weight)
    return matrix / matrix.sum(axis=1, keepdims=True)


def _corners_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of bilinear resampling with aligned corners:
    x_in = x_out (size_in - 1) / (size_out - 1)."""
    source = np.arange(size_out) * ((size_in - 1) / max(size_out - 1, 1))
    low = np.clip(np.floor(source).astype(np.int64), 0, size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    fraction = source - low
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), low), 1.0 - fraction)
    np.add.at(matrix, (np.arange(size_out), high), fraction)
    return matrix


def _separable(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ values @ cols.T`` over the first two axes (channels kept), as float32."""
    resized = np.einsum("Hh,hw...,Ww->HW...", rows, values.astype(np.float64), cols)
    return resized.astype(np.float32)


def resize_map(values: np.ndarray, height: int, width: int, mode: str = "bilinear") -> np.ndarray:
    """Resize an h x w (or h x w x c) float map to height x width.

    ``bilinear``: half-pixel centres (OpenCV ``INTER_LINEAR``, = ``tf.image.resize`` bilinear
    and PyTorch ``align_corners=False``); ``bicubic``: half-pixel Keys cubic, as
    ``tf.image.resize(method="bicubic")`` (Xplique); ``corners``: bilinear with aligned corners
    (TF1's ``align_corners=True``, tf-keras-vis).
    """
    values = np.asarray(values, dtype=np.float32)
    if values.shape[:2] == (height, width):
        return values
    if mode == "corners":
        rows, cols = (
            _corners_matrix(values.shape[0], height),
            _corners_matrix(values.shape[1], width),
        )
        resized = _separable(values, rows, cols)
    elif mode == "bicubic":
        rows, cols = _cubic_matrix(values.shape[0], height), _cubic_matrix(values.shape[1], width)
        resized = _separable(values, rows, cols)
    elif mode == "bilinear":
        resized = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        raise ValueError(f"unknown --upsample {mode!r}; use {', '.join(UPSAMPLE_MODES)}")
    if values.ndim == 3 and resized.ndim == 2:  # cv2 drops a single channel axis
        resized = resized[:, :, None]
    return resized


def colorize(heat01: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Map an H x W array in [0, 1] to an H x W x 3 uint8 RGB image."""
    gray = cv2.convertScaleAbs(np.clip(heat01, 0.0, 1.0), alpha=255.0)  # rounds, saturates
    return cv2.cvtColor(cv2.applyColorMap(gray, colormap_code(colormap)), cv2.COLOR_BGR2RGB)


def overlay(
    image_rgb: np.ndarray, heat01: np.ndarray, *, alpha: float = 0.4, colormap: str = "jet"
) -> np.ndarray:
    """Blend a coloured heatmap over an RGB image: (1 - alpha) * image + alpha * colour.

    The heatmap is resized to the image if needed; the blend is OpenCV's saturating
    ``addWeighted`` (an order of magnitude faster than the same sum in float32 NumPy).
    """
    height, width = image_rgb.shape[:2]
    colour = colorize(resize_map(heat01, height, width), colormap)
    return cv2.addWeighted(image_rgb, 1.0 - alpha, colour, alpha, 0.0)


def overlay_signed(image_rgb: np.ndarray, signed: np.ndarray, *, alpha: float = 0.4) -> np.ndarray:
    """Blend a signed map in [-1, 1] (resized to the image if needed) over an RGB image with the
    diverging colormap, each pixel's opacity ``min(1, 2 alpha |v|)``: zero is transparent,
    the strongest evidence twice as opaque as a plain heatmap (0.8 at the default 0.4)."""
    height, width = image_rgb.shape[:2]
    values = np.clip(resize_map(signed, height, width), -1.0, 1.0)
    colour = colorize((values + 1.0) / 2.0, DIVERGING).astype(np.float32)
    weight = np.minimum(1.0, 2.0 * alpha * np.abs(values))[:, :, None]
    blended = image_rgb.astype(np.float32) * (1.0 - weight) + colour * weight
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def signed_to_image(gradient: np.ndarray, *, spread: float = 0.15, gain: float = 1.0) -> np.ndarray:
    """Render a signed H x W x C gradient: centred on grey, ``spread`` grey levels per std.

    g' = 0.5 + gain * spread * (g - mean) / (std + eps), clipped to [0, 1] — the usual rendering
    of guided back-propagation (Springenberg et al., 2015); ``gain`` < 1 dims a map that is
    weaker than another target's (``--scale joint``).
    """
    g = gradient.astype(np.float32)
    g = 0.5 + gain * spread * (g - g.mean()) / (g.std() + EPSILON)
    image = np.clip(g * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    return image


def map_at_size(
    native: np.ndarray, height: int, width: int, kind: str, upsample: str = "bilinear"
) -> np.ndarray:
    """A method's map at an image's own resolution, as ``--save-raw`` writes it: heatmaps
    clipped to [0, 1], signed heatmaps to [-1, 1], gradient maps (h x w x c) unclipped."""
    full = resize_map(native, height, width, upsample)
    if kind == "heatmap":
        return np.clip(full, 0.0, 1.0)
    if kind == "signed":
        return np.clip(full, -1.0, 1.0)
    return full


SCALE_MODES = ("joint", "each")
DEFAULT_CLIP = 99.0


@dataclass(frozen=True)
class Display:
    """One image's maps ready to colour: heatmaps in [0, 1] or signed maps in [-1, 1], and for
    gradient maps the contrast ``gains`` (1 for the strongest target)."""

    maps: list[np.ndarray]
    gains: list[float]


def display_maps(
    maps: list[np.ndarray],
    kind: str,
    scales: list[float] | None = None,
    *,
    joint: bool = True,
    clip: float | None = None,
) -> Display:
    """An image's maps (one per target, at the method's resolution) as they are drawn.

    ``joint`` (``--scale joint``): heatmap and signed maps are multiplied by
    ``scales[k] / max(scales)`` — each map's normalisation divisor relative to the largest of
    the image's targets, so the maps share one scale (the strongest target spans the full
    colour range, the others less); gradient maps get the same ratio of their standard
    deviations as a contrast gain. Without ``scales`` (or with ``joint=False``) each map keeps
    its own scale. ``clip`` (a percentile, for pixel-level heatmaps): values are divided by the
    largest of the maps' ``clip``-th percentiles of |v| and clipped to the map's range.
    """
    maps = [np.asarray(m, dtype=np.float32) for m in maps]
    gains = [1.0] * len(maps)
    if kind == "gradient":
        spread = [float(m.std()) for m in maps]
        if joint and len(maps) > 1 and max(spread) > EPSILON:
            gains = [s / max(spread) for s in spread]
        return Display(maps, gains)
    if joint and scales is not None and len(maps) > 1 and max(scales) > EPSILON:
        maps = [m * np.float32(s / max(scales)) for m, s in zip(maps, scales, strict=True)]
    if clip is not None and clip < 100.0:
        limits = [float(np.percentile(np.abs(m), clip)) for m in maps]
        limits = [max(limits)] * len(maps) if joint else limits
        low = -1.0 if kind == "signed" else 0.0
        maps = [
            np.clip(m / np.float32(limit), low, 1.0) if limit > EPSILON else m
            for m, limit in zip(maps, limits, strict=True)
        ]
    return Display(maps, gains)


def render_map(
    original: np.ndarray,
    native: np.ndarray,
    kind: str,
    *,
    alpha: float = 0.4,
    colormap: str = "jet",
    upsample: str = "bilinear",
    shown: np.ndarray | None = None,
    gain: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The map at the image's own resolution (what ``--save-raw`` writes), and its picture.

    ``kind``: ``heatmap`` (in [0, 1], overlaid with ``colormap``), ``signed`` (in [-1, 1],
    overlaid with the diverging colormap, zero transparent) or ``gradient`` (signed h x w x c,
    centred on grey). ``shown``: the map as drawn when it differs from ``native`` (see
    :func:`display_maps`), ``gain`` a gradient map's contrast gain.
    """
    height, width = original.shape[:2]
    full = map_at_size(native, height, width, kind, upsample)
    drawn = full if shown is None else map_at_size(shown, height, width, kind, upsample)
    if kind == "gradient":
        return full, signed_to_image(drawn, gain=gain)
    if kind == "signed":
        return full, overlay_signed(original, drawn, alpha=alpha)
    return full, overlay(original, drawn, alpha=alpha, colormap=colormap)


IMAGE_FORMATS = ("png", "jpg", "webp")
JPEG_QUALITY = 92
WEBP_QUALITY = 90


def encode_image(image_rgb: np.ndarray, fmt: str = "png") -> bytes:
    """An RGB uint8 image encoded as PNG (OpenCV's default: its fastest zlib level), JPEG
    (quality 92) or WebP (lossy, quality 90)."""
    params = {
        "png": [],
        "jpg": [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
        "webp": [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY],
    }
    if fmt not in params:
        raise ValueError(f"unknown --format {fmt!r}; use {', '.join(IMAGE_FORMATS)}")
    ok, encoded = cv2.imencode(f".{fmt}", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), params[fmt])
    if not ok:
        raise OSError(f"{fmt.upper()} encoding failed")
    return encoded.tobytes()


def write_image(path: Path, image_rgb: np.ndarray, fmt: str = "png") -> None:
    """Encode an RGB uint8 image (``fmt``: png, jpg, webp) and write it atomically."""
    atomic_write(path, encode_image(image_rgb, fmt))


def write_png(path: Path, image_rgb: np.ndarray) -> None:
    """Encode an RGB uint8 image as PNG and write it atomically."""
    write_image(path, image_rgb, "png")


def _label(width: int, text: str, height: int = 28, scale: float = 0.55) -> np.ndarray:
    """A white strip with dark text, clipped to the strip's width (ASCII only: Hershey font)."""
    strip = np.full((height, width, 3), 255, np.uint8)
    text = text.encode("ascii", "replace").decode()
    font = cv2.FONT_HERSHEY_SIMPLEX
    while len(text) > 1 and cv2.getTextSize(text, font, scale, 1)[0][0] > width - 8:
        text = text[:-2] + "~"
    baseline = (height + cv2.getTextSize(text, font, scale, 1)[0][1]) // 2
    cv2.putText(strip, text, (4, baseline), font, scale, (20, 20, 20), 1, cv2.LINE_AA)
    return strip


def panel(
    tiles: list[tuple[str, np.ndarray]],
    header: str,
    tile_height: int = 256,
    legends: list[str | None] | None = None,
    colormap: str = "jet",
) -> np.ndarray:
    """Side-by-side labelled tiles (all scaled to ``tile_height``) under a one-line header;
    ``legends``: per tile, the map kind whose colour bar goes under it (None: no bar)."""
    columns = []
    legends = legends or [None] * len(tiles)
    for (title, image), kind in zip(tiles, legends, strict=True):
        height, width = image.shape[:2]
        new_width = max(1, round(width * tile_height / height))
        interpolation = cv2.INTER_AREA if new_width < width else cv2.INTER_LINEAR
        scaled = cv2.resize(image, (new_width, tile_height), interpolation=interpolation)
        parts = [_label(new_width, title), scaled]
        if any(legends):
            strip = legend_strip(new_width, kind or "heatmap", colormap)
            if kind is None:
                strip[:] = 255
            parts.append(strip)
        columns.append(np.vstack(parts))
    gap = np.full((columns[0].shape[0], 6, 3), 255, np.uint8)
    body = np.hstack([part for column in columns for part in (column, gap)][:-1])
    return np.vstack([_label(body.shape[1], header, height=32, scale=0.6), body])


def grid(
    rows: list[tuple[str, list[tuple[str, np.ndarray]]]], header: str, tile_height: int = 128
) -> np.ndarray:
    """Rows of labelled tiles (each row a :func:`panel` under its own title) under a header.

    Rows narrower than the widest are padded with white on the right.
    """
    panels = [panel(tiles, title, tile_height) for title, tiles in rows]
    width = max(p.shape[1] for p in panels)
    gap = np.full((6, width, 3), 255, np.uint8)
    parts = [_label(width, header, height=32, scale=0.6)]
    for picture in panels:
        pad = np.full((picture.shape[0], width - picture.shape[1], 3), 255, np.uint8)
        parts += [gap, np.hstack([picture, pad])]
    return np.vstack(parts)

"""Turn explanation maps into pictures.

Heatmaps in [0, 1] are resized to the input image's own resolution (:func:`resize_map`: bilinear
with half-pixel centres by default), coloured with an OpenCV colormap and alpha-blended over the
image. Signed heatmaps in [-1, 1] use a blue-white-red diverging colormap. Gradient maps (guided
back-propagation) are centred on grey and contrast-normalized.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cnnvis_cli.output.files import atomic_write

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


def signed_to_image(gradient: np.ndarray, *, spread: float = 0.15) -> np.ndarray:
    """Render a signed H x W x C gradient: centred on grey, ``spread`` grey levels per std.

    g' = 0.5 + spread * (g - mean) / (std + eps), clipped to [0, 1] — the usual rendering of
    guided back-propagation (Springenberg et al., 2015).
    """
    g = gradient.astype(np.float32)
    g = 0.5 + spread * (g - g.mean()) / (g.std() + EPSILON)
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


def render_map(
    original: np.ndarray,
    native: np.ndarray,
    kind: str,
    *,
    alpha: float = 0.4,
    colormap: str = "jet",
    upsample: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray]:
    """The map at the image's own resolution (what ``--save-raw`` writes), and its picture.

    ``kind``: ``heatmap`` (in [0, 1], overlaid with ``colormap``), ``signed`` (in [-1, 1],
    overlaid with the diverging colormap) or ``gradient`` (signed h x w x c, centred on grey).
    """
    height, width = original.shape[:2]
    full = map_at_size(native, height, width, kind, upsample)
    if kind == "gradient":
        return full, signed_to_image(full)
    if kind == "signed":
        return full, overlay(original, (full + 1.0) / 2.0, alpha=alpha, colormap=DIVERGING)
    return full, overlay(original, full, alpha=alpha, colormap=colormap)


def write_png(path: Path, image_rgb: np.ndarray) -> None:
    """Encode an RGB uint8 image as PNG and write it atomically."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    atomic_write(path, encoded.tobytes())


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


def panel(tiles: list[tuple[str, np.ndarray]], header: str, tile_height: int = 256) -> np.ndarray:
    """Side-by-side labelled tiles (all scaled to ``tile_height``) under a one-line header."""
    columns = []
    for title, image in tiles:
        height, width = image.shape[:2]
        new_width = max(1, round(width * tile_height / height))
        scaled = cv2.resize(image, (new_width, tile_height), interpolation=cv2.INTER_AREA)
        columns.append(np.vstack([_label(new_width, title), scaled]))
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

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


def _align_corners(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize that maps corner pixel centres onto corner pixel centres (TF1's
    ``align_corners=True``, tf-keras-vis' choice): x_in = x_out (w_in - 1) / (w_out - 1)."""
    h_in, w_in = values.shape[:2]
    ys = np.arange(height, dtype=np.float32) * ((h_in - 1) / max(height - 1, 1))
    xs = np.arange(width, dtype=np.float32) * ((w_in - 1) / max(width - 1, 1))
    map_x, map_y = np.meshgrid(xs, ys)
    return cv2.remap(values, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def resize_map(values: np.ndarray, height: int, width: int, mode: str = "bilinear") -> np.ndarray:
    """Resize an h x w (or h x w x c) float map to height x width.

    ``bilinear``: half-pixel centres (OpenCV ``INTER_LINEAR``, = ``tf.image.resize`` bilinear
    and PyTorch ``align_corners=False``); ``bicubic``: OpenCV ``INTER_CUBIC`` (Xplique's choice);
    ``corners``: bilinear with aligned corners (tf-keras-vis).
    """
    values = np.asarray(values, dtype=np.float32)
    if values.shape[:2] == (height, width):
        return values
    if mode == "corners":
        resized = _align_corners(values, height, width)
    elif mode in ("bilinear", "bicubic"):
        flag = cv2.INTER_LINEAR if mode == "bilinear" else cv2.INTER_CUBIC
        resized = cv2.resize(values, (width, height), interpolation=flag)
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
    full = resize_map(native, height, width, upsample)
    if kind == "gradient":
        return full, signed_to_image(full)
    if kind == "signed":
        full = np.clip(full, -1.0, 1.0)
        return full, overlay(original, (full + 1.0) / 2.0, alpha=alpha, colormap=DIVERGING)
    full = np.clip(full, 0.0, 1.0)
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

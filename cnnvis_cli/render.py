"""Turn explanation maps into pictures, and write files atomically.

Heatmaps in [0, 1] are resized bilinearly to the input image's own resolution, coloured with an
OpenCV colormap and alpha-blended over the image. Signed maps (guided back-propagation) are
centred on grey and contrast-normalised. Every write goes to a temporary file in the target
folder and is renamed into place, so an interrupted run never leaves a broken file.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

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


def normalize01(values: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1]: (v - min) / (max - min + eps). A constant map becomes 0."""
    values = values.astype(np.float32)
    low = float(values.min())
    return (values - low) / (float(values.max()) - low + EPSILON)


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an h x w (or h x w x c) float map to height x width."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape[:2] == (height, width):
        return values
    resized = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
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


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_png(path: Path, image_rgb: np.ndarray) -> None:
    """Encode an RGB uint8 image as PNG and write it atomically."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    _atomic_write(path, encoded.tobytes())


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write a float32 array as .npy atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32))
    _atomic_write(path, buffer.getvalue())


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    _atomic_write(path, text.encode("utf-8"))


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

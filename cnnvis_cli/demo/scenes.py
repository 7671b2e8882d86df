"""Deterministic synthetic scenes: one coloured shape over a cluttered background.

Each scene contains exactly one object (circle, square, triangle, cross or star)
drawn anti-aliased on top of a smooth colour gradient with low-frequency colour
blotches, thin random polylines, small elongated blobs and pixel noise. The
object's bounding box and pixel mask are exact: the mask marks every pixel whose
colour the object changed.

This module depends only on numpy and OpenCV (no TensorFlow).
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import cv2
import numpy as np

CLASS_NAMES = ("circle", "square", "triangle", "cross", "star")

_SHIFT = 4  # fractional bits for sub-pixel cv2 drawing
_SCALE = 1 << _SHIFT
_MIN_SIZE_FRAC = 0.15  # object extent as a fraction of the image's short side
_MAX_SIZE_FRAC = 0.40
_MIN_COLOUR_DIST = 120.0  # minimum RGB distance between object and local background


@dataclass(frozen=True)
class Scene:
    """A generated scene and its ground truth.

    Attributes:
        image: H x W x 3 uint8 RGB image.
        label: Index into ``CLASS_NAMES``.
        box: ``(x0, y0, x1, y1)`` pixel box of the object, inclusive-exclusive.
        mask: H x W bool mask of the pixels covered by the object.
    """

    image: np.ndarray
    label: int
    box: tuple[int, int, int, int]
    mask: np.ndarray


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """Return a uniformly random RGB colour as a float32 array of shape (3,)."""
    return rng.uniform(0.0, 255.0, size=3).astype(np.float32)


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth gradient plus low-frequency colour blotches, as float32 H x W x 3."""
    c0, c1 = _random_colour(rng), _random_colour(rng)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    xs = np.arange(width, dtype=np.float32) * np.float32(np.cos(theta))
    ys = np.arange(height, dtype=np.float32) * np.float32(np.sin(theta))
    t = ys[:, None] + xs[None, :]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    grid = rng.uniform(-40.0, 40.0, size=(rng.integers(3, 7), rng.integers(3, 7), 3))
    img = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    img += c0
    img += (c1 - c0) * t[..., None]
    return img


def _random_walk(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Return the vertices (fixed-point int32) of a wandering polyline."""
    short = min(width, height)
    n = int(rng.integers(3, 7))
    start = rng.uniform((0.0, 0.0), (width, height))
    steps = rng.normal(0.0, 0.25 * short, size=(n - 1, 2))
    pts = np.vstack([start, start + np.cumsum(steps, axis=0)])
    return np.round(pts * _SCALE).astype(np.int32)


def _add_clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Draw thin polylines and small elongated blobs in place on ``img``."""
    height, width = img.shape[:2]
    short = min(width, height)
    thickness = max(1, round(short / 160))
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(float(c) for c in _random_colour(rng))
        pts = _random_walk(rng, width, height)
        cv2.polylines(img, [pts], False, colour, thickness, cv2.LINE_AA, _SHIFT)
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(float(c) for c in _random_colour(rng))
        major = rng.uniform(0.015, 0.045) * short
        minor = major * rng.uniform(0.2, 0.5)
        centre = rng.uniform((0.0, 0.0), (width, height))
        cv2.ellipse(
            img,
            (round(centre[0] * _SCALE), round(centre[1] * _SCALE)),
            (round(major * _SCALE), round(minor * _SCALE)),
            float(rng.uniform(0.0, 180.0)),
            0.0,
            360.0,
            colour,
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )


def _polygon(radii: np.ndarray, angles: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Polar vertices around ``(cx, cy)`` as fixed-point int32 points."""
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    return np.round(pts * _SCALE).astype(np.int32)


def _shape_alpha(
    label: int, width: int, height: int, cx: float, cy: float, radius: float, rot: float
) -> np.ndarray:
    """Render the anti-aliased coverage (uint8, 0..255) of a shape of class ``label``.

    Every vertex lies within ``radius`` of the centre ``(cx, cy)``.
    """
    canvas = np.zeros((height, width), np.uint8)
    name = CLASS_NAMES[label]
    if name == "circle":
        centre = (round(cx * _SCALE), round(cy * _SCALE))
        cv2.circle(canvas, centre, round(0.85 * radius * _SCALE), 255, -1, cv2.LINE_AA, _SHIFT)
        return canvas
    if name == "square":
        angles = rot + np.arange(4) * (np.pi / 2)
        pts = _polygon(np.full(4, radius), angles, cx, cy)
    elif name == "triangle":
        angles = rot + np.arange(3) * (2 * np.pi / 3)
        pts = _polygon(np.full(3, radius), angles, cx, cy)
    elif name == "cross":
        half_w = 0.3 * radius
        arm = np.sqrt(radius**2 - half_w**2)
        local = np.array(
            [
                (half_w, half_w), (arm, half_w), (arm, -half_w), (half_w, -half_w),
                (half_w, -arm), (-half_w, -arm), (-half_w, -half_w), (-arm, -half_w),
                (-arm, half_w), (-half_w, half_w), (-half_w, arm), (half_w, arm),
            ]
        )  # fmt: skip
        c, s = np.cos(rot), np.sin(rot)
        rotated = local @ np.array([[c, s], [-s, c]])
        pts = np.round((rotated + np.array([cx, cy])) * _SCALE).astype(np.int32)
    elif name == "star":
        angles = rot + np.arange(10) * (np.pi / 5)
        radii = np.where(np.arange(10) % 2 == 0, radius, 0.42 * radius)
        pts = _polygon(radii, angles, cx, cy)
    else:  # pragma: no cover - guarded by make_scene
        raise ValueError(f"unknown label {label}")
    cv2.fillPoly(canvas, [pts], 255, cv2.LINE_AA, _SHIFT)
    return canvas


def _object_colour(rng: np.random.Generator, local_bg: np.ndarray) -> np.ndarray:
    """Pick a random colour far (in RGB) from the mean local background colour."""
    best, best_dist = _random_colour(rng), -1.0
    for _ in range(64):
        colour = _random_colour(rng)
        dist = float(np.linalg.norm(colour - local_bg))
        if dist >= _MIN_COLOUR_DIST:
            return colour
        if dist > best_dist:
            best, best_dist = colour, dist
    return best


def make_scene(
    rng: np.random.Generator, width: int, height: int, label: int | None = None
) -> Scene:
    """Generate one scene of ``width`` x ``height`` pixels.

    Args:
        rng: Source of randomness; the scene is a pure function of its state.
        width: Image width in pixels.
        height: Image height in pixels.
        label: Class index into ``CLASS_NAMES``; random if ``None``.

    Returns:
        The scene with its exact object box and mask.
    """
    if label is None:
        label = int(rng.integers(len(CLASS_NAMES)))
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label must be in [0, {len(CLASS_NAMES)}), got {label}")
    short = min(width, height)
    if short < 24:
        raise ValueError(f"image too small: {width}x{height}")

    img = _background(rng, width, height)
    _add_clutter(rng, img)

    radius = 0.5 * rng.uniform(_MIN_SIZE_FRAC, _MAX_SIZE_FRAC) * short
    margin = radius + 2.0  # anti-aliasing may touch one extra pixel
    cx = rng.uniform(margin, width - margin)
    cy = rng.uniform(margin, height - margin)
    rot = rng.uniform(0.0, 2.0 * np.pi)
    alpha_u8 = _shape_alpha(label, width, height, cx, cy, radius, rot)
    mask = alpha_u8 > 0

    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    local_bg = img[box[1] : box[3], box[0] : box[2]].reshape(-1, 3).mean(axis=0)
    colour = _object_colour(rng, local_bg)

    x0, y0, x1, y1 = box
    alpha = alpha_u8[y0:y1, x0:x1, None].astype(np.float32) / 255.0
    roi = img[y0:y1, x0:x1]
    roi += (colour - roi) * alpha
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= np.float32(rng.uniform(2.0, 8.0))
    img += noise
    np.clip(img, 0.0, 255.0, out=img)
    np.rint(img, out=img)
    image = img.astype(np.uint8)
    return Scene(image=image, label=label, box=box, mask=mask)


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """Draw a random ``(width, height)`` with varied size and aspect ratio."""
    short = int(rng.integers(100, 481))
    long = round(short * rng.uniform(1.0, 1.45))
    return (long, short) if rng.random() < 0.5 else (short, long)


def _render_chunk(args: tuple[np.ndarray, np.ndarray, int]) -> np.ndarray:
    """Render and resize the scenes for one chunk of (seed, label) pairs."""
    seeds, labels, size = args
    out = np.empty((len(labels), size, size, 3), np.uint8)
    for i, (seed, label) in enumerate(zip(seeds, labels, strict=True)):
        rng = np.random.default_rng(int(seed))
        width, height = random_size(rng)
        scene = make_scene(rng, width, height, int(label))
        out[i] = cv2.resize(scene.image, (size, size), interpolation=cv2.INTER_AREA)
    return out


def make_dataset(seed: int, n: int, size: int, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``n`` class-balanced scenes resized to ``size`` x ``size``.

    Scenes are drawn at random sizes and aspect ratios, then resized with
    ``cv2.INTER_AREA`` exactly as an input image is resized at inference.
    Every scene has its own seed derived from ``seed``, so the result does not
    depend on ``workers``.

    Args:
        seed: Seed for ``np.random.default_rng``; equal seeds give equal data.
        n: Number of scenes.
        size: Output side length in pixels.
        workers: Number of processes to render with (1 = in-process).

    Returns:
        ``(images, labels)``: uint8 array ``(n, size, size, 3)`` and int64 array ``(n,)``.
    """
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int64)
    seeds = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)
    if workers <= 1 or n < 256:
        return _render_chunk((seeds, labels, size)), labels
    chunks = [(seeds[i : i + 512], labels[i : i + 512], size) for i in range(0, n, 512)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        parts = pool.map(_render_chunk, chunks)
    return np.concatenate(parts), labels

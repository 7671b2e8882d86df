"""Reference images ("baselines") on the raw 0..255 pixel scale, shared by the methods.

Occlusion paints its patch with one, Integrated Gradients integrates from one, the insertion
metric reveals pixels onto one. Named baselines: ``mean`` (the image's per-channel mean),
``zero``/``black`` (0), ``gray`` (127.5), ``blur`` (a Gaussian blur of the image, OpenCV
``GaussianBlur`` with reflected borders); or any number on the 0..255 scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

GRAY = 127.5


def parse_baseline(baseline: str | float, choices: Sequence[str], what: str) -> str | float:
    """One of ``choices`` (case-insensitive), or a finite number on the raw 0..255 scale."""
    if isinstance(baseline, str) and baseline.strip().lower() in choices:
        return baseline.strip().lower()
    try:
        value = float(baseline)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(
            f"unknown --baseline {baseline!r} for {what}; choose one of {', '.join(choices)} or "
            "a number on the raw 0..255 pixel scale"
        )
    return value


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an (h, w, c) float image with reflected borders, shape preserved."""
    image = np.asarray(image, dtype=np.float32)
    blurred = cv2.GaussianBlur(
        image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101
    )
    return blurred.reshape(image.shape).astype(np.float32)


def baseline_image(image: np.ndarray, baseline: str | float, blur_sigma: float) -> np.ndarray:
    """The (h, w, c) float32 baseline for one raw image (``blur_sigma`` for ``blur``)."""
    image = np.asarray(image, dtype=np.float32)
    if baseline == "mean":
        return np.broadcast_to(image.mean(axis=(0, 1), keepdims=True), image.shape).copy()
    if baseline in ("zero", "black"):
        return np.zeros_like(image)
    if baseline == "gray":
        return np.full_like(image, GRAY)
    if baseline == "blur":
        return gaussian_blur(image, blur_sigma)
    return np.full_like(image, float(baseline))

"""How maps are scaled for display: one vocabulary, one spelling ("normalize").

- :func:`normalize_minmax` / :func:`normalize_minmax_tf`: ``(m - min) / (max - min + eps)`` per
  map over its two spatial axes, into [0, 1]; an all-equal map becomes 0 (CAMs, gradient maps).
- :func:`normalize_by_max`: ``max(m, 0) / (max m + eps)`` in [0, 1], or, signed,
  ``m / (max |m| + eps)`` in [-1, 1]: zero stays zero (occlusion's drops, where 0 means "no
  effect").
- :func:`minmax_range` / :func:`minmax_range_tf` and :func:`max_scale`: the divisor each of those
  used (max - min, or the maximum), kept per target as ``Explanation.scales`` so the renderer can
  scale an image's targets jointly (``--scale joint``).
- :func:`heat_from_map`: the non-negative per-pixel importance of any kind of map, which the
  region check and the faithfulness metrics rank and sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPSILON = 1e-8


def normalize_minmax(maps: np.ndarray) -> np.ndarray:
    """Min-max normalize each map over its last two axes to [0, 1], as float32 (NumPy)."""
    maps = np.asarray(maps, dtype=np.float64)
    low = maps.min(axis=(-2, -1), keepdims=True)
    high = maps.max(axis=(-2, -1), keepdims=True)
    return ((maps - low) / (high - low + EPSILON)).astype(np.float32)


def normalize_minmax_tf(maps: Any) -> Any:
    """Min-max normalize (B, h, w[, ...]) maps over axes (1, 2) to [0, 1] (TensorFlow)."""
    from cnnvis_cli.core.tf import tf_and_keras

    tf, _ = tf_and_keras()
    low = tf.reduce_min(maps, axis=(1, 2), keepdims=True)
    high = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return (maps - low) / (high - low + EPSILON)


def minmax_range(maps: np.ndarray) -> np.ndarray:
    """max - min of each map over its last two axes: what :func:`normalize_minmax` divides by."""
    maps = np.asarray(maps, dtype=np.float64)
    return maps.max(axis=(-2, -1)) - maps.min(axis=(-2, -1))


def minmax_range_tf(maps: Any, axis: tuple[int, int] = (1, 2)) -> Any:
    """max - min over ``axis`` (TensorFlow): what :func:`normalize_minmax_tf` divides by."""
    from cnnvis_cli.core.tf import tf_and_keras

    tf, _ = tf_and_keras()
    return tf.reduce_max(maps, axis=axis) - tf.reduce_min(maps, axis=axis)


def max_scale(values: np.ndarray, *, signed: bool = False) -> float:
    """What :func:`normalize_by_max` divides by (without the epsilon)."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.abs(values).max() if signed else np.maximum(values, 0.0).max())


def normalize_by_max(values: np.ndarray, *, signed: bool = False) -> np.ndarray:
    """max(m, 0) / (max m + eps) in [0, 1], or m / (max |m| + eps) in [-1, 1] when signed."""
    values = np.asarray(values, dtype=np.float64)
    if signed:
        return values / (np.abs(values).max() + EPSILON)
    positive = np.maximum(values, 0.0)
    return positive / (positive.max() + EPSILON)


def heat_from_map(full: np.ndarray) -> np.ndarray:
    """A non-negative H x W heat from any method's map: |g| summed over channels for gradient
    maps (H x W x C), the positive part for signed heatmaps, the map itself otherwise."""
    if full.ndim == 3:
        return np.abs(full).sum(axis=2)
    return np.maximum(full, 0.0)

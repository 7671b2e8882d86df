"""How alike two saliency maps are: the measures of Adebayo et al.'s sanity checks.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity Checks for Saliency Maps", NeurIPS 2018,
compare the maps of a trained model with those of the model with randomised weights by four
measures, each 1 for identical maps:

- **Spearman rank correlation of |map|** (``spearman_abs``) and **of the signed map**
  (``spearman_signed``): Pearson's correlation of the two maps' ranks (ties get their average
  rank, as ``scipy.stats.spearmanr``);
- **SSIM** (``ssim``), the structural similarity index of Wang et al. (2004) with
  scikit-image's defaults: a 7 x 7 uniform window, K1 = 0.01, K2 = 0.03, sample covariances
  (N / (N - 1)), data range 1, averaged over the positions whose window lies inside the map;
- **HOG similarity** (``hog``): Pearson's correlation of the two maps' histograms of oriented
  gradients, computed as ``skimage.feature.hog`` computes them by default (9 unsigned
  orientations, 8 x 8-pixel cells, 3 x 3-cell blocks, L2-Hys block normalisation; cells shrink to
  a third of the short side for maps under 24 pixels).

Normalisation, as the authors' code does it (``saliency.VisualizeImageGrayscale`` and
``VisualizeImageDiverging``, which ``src/utils.py`` of adebayoj/sanity_checks_saliency uses):

- absolute: ``a = sum_c |m|`` (channels of a gradient map summed), then
  ``clip((a - min a) / (p99(a) - min a), 0, 1)`` — the top 1 % saturate at 1;
- signed: ``s = sum_c m``, then ``clip(s / p99(|s|), -1, 1)``.

Both rank correlations are taken on these normalised maps (the clipping ties the top 1 %, as in
the figures), SSIM and HOG on the absolute one, in [0, 1]. A map that is constant (all zero, e.g.
a Grad-CAM whose ReLU removed everything) carries no ranking: a correlation with it is 0, unless
both maps are constant, which is 1 (identical maps are always 1).
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MEASURES = ("spearman_abs", "spearman_signed", "ssim", "hog")
MEASURE_LABELS = {
    "spearman_abs": "Spearman |map|",
    "spearman_signed": "Spearman signed",
    "ssim": "SSIM",
    "hog": "HOG",
}
PERCENTILE = 99.0
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
HOG_ORIENTATIONS = 9
HOG_CELL = 8
HOG_BLOCK = 3
HOG_EPS = 1e-5


def _channel_sum(values: np.ndarray, absolute: bool) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if absolute:
        values = np.abs(values)
    return values.sum(axis=2) if values.ndim == 3 else values


def normalize_absolute(values: np.ndarray) -> np.ndarray:
    """``clip((a - min a) / (p99(a) - min a), 0, 1)`` of ``a = sum_c |m|`` (float64, h x w).

    When the 99th percentile equals the minimum (a map that is 99 % flat) the maximum is used
    instead; a constant map becomes all zero.
    """
    a = _channel_sum(values, absolute=True)
    low = float(a.min())
    high = float(np.percentile(a, PERCENTILE))
    if high <= low:
        high = float(a.max())
    if high <= low:
        return np.zeros_like(a)
    return np.clip((a - low) / (high - low), 0.0, 1.0)


def normalize_signed(values: np.ndarray) -> np.ndarray:
    """``clip(s / p99(|s|), -1, 1)`` of ``s = sum_c m`` (float64, h x w); all zero if s is."""
    s = _channel_sum(values, absolute=False)
    span = float(np.percentile(np.abs(s), PERCENTILE))
    if span <= 0.0:
        span = float(np.abs(s).max())
    if span <= 0.0:
        return np.zeros_like(s)
    return np.clip(s / span, -1.0, 1.0)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (``scipy.stats.rankdata``'s default)."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], flat.size]
    average = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(flat.size)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation of two equally long vectors; for a constant vector 1.0 if both are
    constant and equal in shape, else 0.0 (no ranking to agree with)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cannot correlate vectors of {a.size} and {b.size} values")
    da, db = a - a.mean(), b - b.mean()
    na, nb = float(np.sqrt(np.dot(da, da))), float(np.sqrt(np.dot(db, db)))
    scale_a = max(float(np.abs(a).max(initial=0.0)), 1e-300)
    scale_b = max(float(np.abs(b).max(initial=0.0)), 1e-300)
    flat_a = na <= 1e-12 * scale_a * np.sqrt(a.size)
    flat_b = nb <= 1e-12 * scale_b * np.sqrt(b.size)
    if flat_a or flat_b:
        return 1.0 if flat_a and flat_b else 0.0
    return float(np.clip(np.dot(da, db) / (na * nb), -1.0, 1.0))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (average ranks for ties)."""
    return pearson(_ranks(a), _ranks(b))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean structural similarity of two h x w maps (scikit-image's defaults, see the module)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"SSIM needs two h x w maps of one shape, got {a.shape} and {b.shape}")
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs maps of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels")

    def mean(x: np.ndarray) -> np.ndarray:
        window = (SSIM_WINDOW, SSIM_WINDOW)
        return cv2.boxFilter(x, cv2.CV_64F, window, borderType=cv2.BORDER_REFLECT)

    count = SSIM_WINDOW * SSIM_WINDOW
    cov_norm = count / (count - 1)
    ux, uy = mean(a), mean(b)
    vx = cov_norm * (mean(a * a) - ux * ux)
    vy = cov_norm * (mean(b * b) - uy * uy)
    vxy = cov_norm * (mean(a * b) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (SSIM_WINDOW - 1) // 2
    return float(index[pad:-pad, pad:-pad].mean())


def hog_cell_size(height: int, width: int) -> int:
    """8 pixels per cell, or a third of the short side for maps under 3 cells of 8."""
    return max(1, min(HOG_CELL, min(height, width) // HOG_BLOCK))


def hog(image: np.ndarray, cell: int | None = None) -> np.ndarray:
    """Histogram-of-oriented-gradients features of an h x w map, as ``skimage.feature.hog``
    with ``orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(3, 3),
    block_norm="L2-Hys"`` computes them (a flat vector)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"HOG needs an h x w map, got shape {image.shape}")
    height, width = image.shape
    cell = cell or hog_cell_size(height, width)
    g_row = np.zeros_like(image)
    g_col = np.zeros_like(image)
    g_row[1:-1, :] = image[2:, :] - image[:-2, :]
    g_col[:, 1:-1] = image[:, 2:] - image[:, :-2]
    magnitude = np.hypot(g_col, g_row)
    orientation = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    rows, cols = height // cell, width // cell
    if rows < HOG_BLOCK or cols < HOG_BLOCK:
        raise ValueError(f"HOG needs at least {HOG_BLOCK} cells of {cell} pixels per side")
    magnitude = magnitude[: rows * cell, : cols * cell]
    orientation = orientation[: rows * cell, : cols * cell]
    edges = (180.0 / HOG_ORIENTATIONS) * np.arange(HOG_ORIENTATIONS + 1)
    bins = np.searchsorted(edges, orientation, side="right") - 1  # edges[i] <= o < edges[i+1]
    valid = bins < HOG_ORIENTATIONS  # an angle of exactly 180 falls in no bin (as skimage)
    cell_row = np.arange(rows * cell) // cell
    cell_col = np.arange(cols * cell) // cell
    index = (cell_row[:, None] * cols + cell_col[None, :]) * HOG_ORIENTATIONS + bins
    histogram = np.bincount(
        index[valid], weights=magnitude[valid], minlength=rows * cols * HOG_ORIENTATIONS
    ).reshape(rows, cols, HOG_ORIENTATIONS) / (cell * cell)
    blocks = sliding_window_view(histogram, (HOG_BLOCK, HOG_BLOCK), axis=(0, 1))
    blocks = blocks.transpose(0, 1, 3, 4, 2)  # (block rows, block cols, 3, 3, orientations)
    norm = np.sqrt((blocks**2).sum(axis=(2, 3, 4), keepdims=True) + HOG_EPS**2)
    clipped = np.minimum(blocks / norm, 0.2)
    norm = np.sqrt((clipped**2).sum(axis=(2, 3, 4), keepdims=True) + HOG_EPS**2)
    return (clipped / norm).ravel()


def hog_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's correlation of the HOG features of two h x w maps."""
    return pearson(hog(a), hog(b))


def similarities(original: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """The four measures between two maps of one kind and size (h x w, or h x w x c)."""
    original = np.asarray(original)
    other = np.asarray(other)
    if original.shape != other.shape:
        raise ValueError(f"maps differ in shape: {original.shape} and {other.shape}")
    abs_a, abs_b = normalize_absolute(original), normalize_absolute(other)
    return {
        "spearman_abs": spearman(abs_a, abs_b),
        "spearman_signed": spearman(normalize_signed(original), normalize_signed(other)),
        "ssim": ssim(abs_a, abs_b),
        "hog": hog_similarity(abs_a, abs_b),
    }

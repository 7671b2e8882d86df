"""Adaptive drill-down (Krypton, SIGMOD 2019, section 4.2) and per-pixel averaging of drops.

Most of an occlusion map is flat; the interesting part is where hiding a patch makes the output
drop most. Drill-down evaluates the patch positions of a *coarse* grid first (every
``coarse_stride // stride``-th corner of the fine grid, plus cnnvis' border corner, so coarse
corners are fine corners), keeps the fraction ``keep`` of coarse positions with the largest drop,
and evaluates the fine grid only in their neighbourhood: the fine corners less than one coarse
step away (a block of ``2 m - 1`` fine positions per axis around each kept coarse corner, with
``m = coarse_stride / stride``). Positions are evaluated at most once.

The map is the per-pixel mean of the drops of all evaluated patches covering the pixel, via 2-D
prefix sums: each patch adds ``d`` at its top-left corner of a difference array and subtracts it
beyond its right and bottom edges (``np.add.at``), and a cumulative sum over both axes turns that
into the sums (and, with ``d = 1``, the counts) per pixel. Where every fine patch covering a
pixel was evaluated (``DrillDown.refined``) the value equals the exact fine-grid map; elsewhere
it is the coarse grid's mean. Pixels covered by no evaluated patch (only when
``coarse_stride > patch``) are 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def _corners(size: int, patch: int, stride: int) -> np.ndarray:
    from cnnvis_cli.methods.occlusion import patch_corners

    return patch_corners(size, patch, stride)


def _sums(
    corners: np.ndarray, values: np.ndarray, patch: int, height: int, width: int
) -> np.ndarray:
    """(h, w, K) sums of ``values`` (n, K) over the patches at ``corners`` covering each pixel."""
    diff = np.zeros((height + 1, width + 1, values.shape[1]), dtype=np.float64)
    ys, xs = corners[:, 0], corners[:, 1]
    np.add.at(diff, (ys, xs), values)
    np.add.at(diff, (ys, xs + patch), -values)
    np.add.at(diff, (ys + patch, xs), -values)
    np.add.at(diff, (ys + patch, xs + patch), values)
    return diff.cumsum(axis=0).cumsum(axis=1)[:height, :width]


def per_pixel_mean(
    corners: np.ndarray, drops: np.ndarray, patch: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean of the drops of the patches covering each pixel, and the counts.

    ``corners`` (n, 2) (y, x); ``drops`` (n,) or (n, K). Returns the map ((h, w) or (K, h, w),
    float64, 0 where no patch covers a pixel) and the (h, w) int64 counts.
    """
    corners = np.asarray(corners, dtype=np.int64).reshape(-1, 2)
    drops = np.asarray(drops, dtype=np.float64)
    flat = drops.reshape(len(corners), -1)
    sums = _sums(corners, flat, patch, height, width)
    counts = np.rint(_sums(corners, np.ones((len(corners), 1)), patch, height, width)[..., 0])
    mean = np.divide(sums, counts[..., None], out=np.zeros_like(sums), where=counts[..., None] > 0)
    mean = np.moveaxis(mean, -1, 0)
    return (mean[0] if drops.ndim == 1 else mean), counts.astype(np.int64)


@dataclass(frozen=True)
class DrillDown:
    """Result of ``drill_down``: the map and what was evaluated.

    ``drop_map``: (h, w) or (K, h, w) per-pixel mean drop; ``corners`` (m, 2) / ``drops`` the
    evaluated positions and their drops; ``refined`` (h, w): pixels whose every covering fine
    patch was evaluated (the map is exact there); ``fine_positions``: size of the fine grid.
    """

    drop_map: np.ndarray
    corners: np.ndarray
    drops: np.ndarray
    refined: np.ndarray
    coarse_positions: int
    fine_positions: int

    @property
    def evaluated(self) -> int:
        return len(self.corners)


def drill_down(
    evaluate: Callable[[np.ndarray], np.ndarray],
    height: int,
    width: int,
    patch: int,
    stride: int,
    *,
    coarse_stride: int | None = None,
    keep: float = 0.25,
) -> DrillDown:
    """Coarse-to-fine occlusion: ``evaluate(corners (m, 2) int64) -> drops (m,) or (m, K)``.

    Args:
        coarse_stride: stride of the first pass, a multiple of ``stride`` (default 2 stride).
        keep: fraction of coarse positions (highest drop first; the maximum over K targets)
            around which the fine grid is evaluated; at least one.
    """
    if stride < 1 or patch < 1:
        raise ValueError("patch and stride must be positive")
    coarse_stride = 2 * stride if coarse_stride is None else int(coarse_stride)
    if coarse_stride < stride or coarse_stride % stride:
        raise ValueError(f"coarse_stride {coarse_stride} must be a multiple of stride {stride}")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    step = coarse_stride // stride
    fine_y, fine_x = _corners(height, patch, stride), _corners(width, patch, stride)
    grid_y = _coarse_indices(len(fine_y), step)
    grid_x = _coarse_indices(len(fine_x), step)
    evaluated = np.zeros((len(fine_y), len(fine_x)), dtype=bool)
    coarse = np.stack(np.meshgrid(grid_y, grid_x, indexing="ij"), axis=-1).reshape(-1, 2)
    coarse_drops = _run(evaluate, fine_y, fine_x, coarse)
    evaluated[coarse[:, 0], coarse[:, 1]] = True
    scores = coarse_drops if coarse_drops.ndim == 1 else coarse_drops.max(axis=1)
    kept = coarse[np.argsort(-scores, kind="stable")[: max(1, round(keep * len(coarse)))]]
    wanted = np.zeros_like(evaluated)
    for i, j in kept:
        wanted[max(0, i - step + 1) : i + step, max(0, j - step + 1) : j + step] = True
    fine = np.argwhere(wanted & ~evaluated)
    fine_drops = _run(evaluate, fine_y, fine_x, fine) if len(fine) else coarse_drops[:0]
    index = np.concatenate([coarse, fine])
    corners = np.stack([fine_y[index[:, 0]], fine_x[index[:, 1]]], axis=1)
    drops = np.concatenate([coarse_drops, fine_drops])
    drop_map, counts = per_pixel_mean(corners, drops, patch, height, width)
    all_fine = np.stack(np.meshgrid(fine_y, fine_x, indexing="ij"), axis=-1).reshape(-1, 2)
    _, fine_counts = per_pixel_mean(all_fine, np.zeros(len(all_fine)), patch, height, width)
    return DrillDown(
        drop_map=drop_map,
        corners=corners,
        drops=drops,
        refined=counts == fine_counts,
        coarse_positions=len(coarse),
        fine_positions=len(all_fine),
    )


def _coarse_indices(count: int, step: int) -> np.ndarray:
    """Every ``step``-th index of the fine grid, plus its last (the border corner)."""
    index = np.arange(0, count, step)
    if index[-1] != count - 1:
        index = np.append(index, count - 1)
    return index


def _run(
    evaluate: Callable[[np.ndarray], np.ndarray],
    fine_y: np.ndarray,
    fine_x: np.ndarray,
    index: np.ndarray,
) -> np.ndarray:
    corners = np.stack([fine_y[index[:, 0]], fine_x[index[:, 1]]], axis=1).astype(np.int64)
    drops = np.asarray(evaluate(corners), dtype=np.float64)
    if drops.shape[0] != len(corners):
        raise ValueError(f"evaluate returned {drops.shape[0]} drops for {len(corners)} corners")
    return drops

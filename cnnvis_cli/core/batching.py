"""The one batching helper: equal, padded chunks, so each compiled function is traced once.

Two settings, named for what they count (Captum's ``internal_batch_size`` and
``perturbations_per_eval`` are the precedent):

- ``images``: images per step of the pipeline (``--batch-size``); Grad-CAM-like methods explain
  a step in one compiled call.
- ``evaluations``: model evaluations per compiled call (``--eval-batch``) for methods that run the
  model on many modified copies of an image (occlusion's patches, SmoothGrad's noisy copies,
  Integrated Gradients' path points, Score-CAM's masks, the metrics' steps).

``total`` items are split into ``ceil(total / limit)`` chunks of equal size
``n = ceil(total / ceil(total / limit))``; the last chunk is padded by repeating its last item.
Every chunk then has the same shape (one trace), and padding wastes fewer than one evaluation per
chunk instead of up to ``limit - 1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batching:
    """How much work goes into one step and one compiled call."""

    images: int = 16
    evaluations: int = 64

    def __post_init__(self) -> None:
        if self.images < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.images}")
        if self.evaluations < 1:
            raise ValueError(f"--eval-batch must be at least 1, got {self.evaluations}")


@dataclass(frozen=True)
class Chunk:
    """Rows ``index`` (length = the chunk size) of which the first ``real`` are new items."""

    index: np.ndarray
    real: int
    done: float  # fraction of all items done once this chunk is


def chunk_size(total: int, limit: int) -> int:
    """Size of the equal chunks covering ``total`` items, at most ``limit`` per chunk."""
    if total <= 0:
        return 0
    return math.ceil(total / math.ceil(total / limit))


def chunks(total: int, limit: int) -> Iterator[Chunk]:
    """Equal chunks of ``range(total)``, the last padded by repeating the last item."""
    size = chunk_size(total, limit)
    if size == 0:
        return
    count = math.ceil(total / size)
    for number in range(count):
        start = number * size
        index = np.minimum(np.arange(start, start + size), total - 1)
        yield Chunk(index, min(size, total - start), (number + 1) / count)


def pad_rows(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` with its last row repeated until it has ``size`` rows."""
    missing = size - len(array)
    if missing <= 0:
        return array
    return np.concatenate([array, np.repeat(array[-1:], missing, axis=0)])

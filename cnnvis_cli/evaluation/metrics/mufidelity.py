"""MuFidelity: does the map's mass on a random subset predict the score lost by removing it?

Bhatt, Weller & Moura, "Evaluating and Aggregating Feature-based Model Explanations", IJCAI 2020
(definition 3); Xplique's ``MuFidelity`` is the reference implementation.

The image is cut into a ``grid`` x ``grid`` grid of cells (pixel row r lies in cell row
floor(r g / h), likewise for columns). Each of ``--metric-samples`` samples S removes a random
set of exactly k = round(0.2 g^2) cells (drawn uniformly without replacement, seeded) by setting
their pixels to the baseline, black (0 on the raw 0..255 scale)::

    muF = Corr_S( sum_{i in S} s_i ,  f_c(x) - f_c(x with S removed) )

where s is the saliency and f_c the model's output for the class (a probability for softmax
heads) and Corr is Pearson's correlation, as in the paper (0 when either side is constant).
Higher is better: the map's mass predicts what the model loses.

Differences from Xplique: Xplique removes each cell independently with probability 0.2 (so |S|
varies), uses Spearman's correlation, a baseline in model-input space and the model's raw output
unless told to add an activation. Defaults shared: a 9 x 9 grid, 20 % of it removed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnvis_cli.evaluation.metrics.base import Metric, Scorer, validate
from cnnvis_cli.evaluation.similarity import pearson

GRID = 9
SUBSET_FRACTION = 0.2


def cell_index(height: int, width: int, grid: int) -> np.ndarray:
    """(h, w) int: each pixel's cell, row-major over the grid."""
    rows = np.arange(height) * grid // height
    cols = np.arange(width) * grid // width
    return rows[:, None] * grid + cols[None, :]


def random_subsets(samples: int, cells: int, size: int, seed: int) -> np.ndarray:
    """(samples, size) int: uniform random ``size``-subsets of ``range(cells)`` (seeded)."""
    rng = np.random.default_rng(seed)
    return np.argsort(rng.random((samples, cells)), axis=1)[:, :size]


class MuFidelity(Metric):
    """Correlation between subset attribution and the score drop when the subset is removed."""

    keys = ("mufidelity",)

    def __init__(self, adapter: Any, settings: Any = None, names: Any = None) -> None:
        super().__init__(adapter, settings, names)
        self.scorer = Scorer(adapter, self.settings.batch_size)

    def params(self) -> dict[str, Any]:
        return {
            "mufidelity": {
                "grid": GRID,
                "subset": SUBSET_FRACTION,
                "samples": self.settings.samples,
                "baseline": "black (0)",
                "correlation": "pearson",
            }
        }

    def evaluate(self, image: Any, saliency: Any, class_index: int) -> dict[str, float]:
        image, saliency = validate(self.adapter, image, saliency, class_index)
        height, width = saliency.shape
        grid = min(GRID, height, width)
        cells = cell_index(height, width, grid)
        size = max(1, round(SUBSET_FRACTION * grid * grid))
        subsets = random_subsets(self.settings.samples, grid * grid, size, self.settings.seed)
        chosen = np.zeros((len(subsets), grid * grid), dtype=bool)
        np.put_along_axis(chosen, subsets, True, axis=1)
        cell_mass = np.bincount(cells.ravel(), weights=saliency.ravel(), minlength=grid * grid)
        attribution = cell_mass[subsets].sum(axis=1)
        keep = np.concatenate([np.ones((1, height, width)), ~chosen[:, cells]]).astype(np.float32)
        scores = self.scorer.masked(image, keep, class_index)
        drops = scores[0] - scores[1:]
        return {"mufidelity": pearson(attribution, drops)}

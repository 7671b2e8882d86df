"""Sparseness: the Gini index of the map (Chalasani et al., ICML 2020; Quantus ``Sparseness``).

For the n values a_1 <= ... <= a_n of |saliency| + 1e-7 (Quantus adds the constant so an
all-zero map is defined)::

    G = sum_i (2 i - n - 1) a_i / (n sum_i a_i)

0 for a uniform map, towards 1 when the mass sits on a few pixels. Higher is sparser (easier to
read); it says nothing about faithfulness. Computed on the map at the model input's resolution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnvis_cli.evaluation.metrics.base import Metric, validate

OFFSET = 1e-7


def gini(values: np.ndarray) -> float:
    a = np.sort(np.abs(np.asarray(values, dtype=np.float64)).ravel() + OFFSET)
    n = a.size
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * a) / (n * a.sum()))


class Sparseness(Metric):
    keys = ("sparseness",)

    def evaluate(self, image: Any, saliency: Any, class_index: int) -> dict[str, float]:
        _, saliency = validate(self.adapter, image, saliency, class_index)
        return {"sparseness": gini(saliency)}

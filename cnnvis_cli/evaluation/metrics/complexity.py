"""Complexity: the entropy of the map's mass (Bhatt et al., IJCAI 2020; Quantus ``Complexity``).

With p = |saliency| / sum |saliency| over the n pixels (at the model input's resolution)::

    H = - sum_i p_i ln p_i        (nats; 0 .. ln n)

Lower is simpler: the mass is on fewer pixels. An all-zero map has no distribution (null).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnvis_cli.evaluation.metrics.base import Metric, validate


def entropy(values: np.ndarray) -> float:
    a = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    total = a.sum()
    if total <= 0:
        return math.nan
    p = a[a > 0] / total
    return float(-(p * np.log(p)).sum())


class Complexity(Metric):
    keys = ("complexity",)

    def evaluate(self, image: Any, saliency: Any, class_index: int) -> dict[str, float]:
        _, saliency = validate(self.adapter, image, saliency, class_index)
        return {"complexity": entropy(saliency)}

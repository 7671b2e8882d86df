"""Average drop and increase in confidence: the score on the image seen through the map.

Chattopadhay, Sarkar, Howlader & Balasubramanian, "Grad-CAM++: Generalized Gradient-based Visual
Explanations for Deep Convolutional Networks", WACV 2018 (section 6.1.1). The explanation map
``E = x * M`` keeps each pixel in proportion to the map, M = the saliency min-max normalised to
[0, 1] (what falls to 0 becomes black, 0 on the raw scale). With Y = f_c(x) and O = f_c(E), the
model's output for the class (a probability for softmax heads)::

    avgdrop  = max(0, Y - O) / Y      (the paper's "average drop %" / 100 once averaged; lower
                                       is better)
    increase = 1 if O > Y else 0      (the paper's "% increase in confidence" / 100 once
                                       averaged; higher is better)

Xplique's ``AverageDropMetric`` / ``AverageIncreaseMetric`` build the same mask (|map| averaged
over channels, min-max per image); it applies it in model-input space.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnvis_cli.evaluation.metrics.base import Metric, Scorer, validate
from cnnvis_cli.methods.normalize import normalize_minmax

EPSILON = 1e-8


class AverageDrop(Metric):
    """``avgdrop`` and ``increase`` from one masked forward pass."""

    keys = ("avgdrop", "increase")

    def __init__(self, adapter: Any, settings: Any = None, names: Any = None) -> None:
        super().__init__(adapter, settings, names)
        self.scorer = Scorer(adapter, self.settings.batch_size)

    def evaluate(self, image: Any, saliency: Any, class_index: int) -> dict[str, float]:
        image, saliency = validate(self.adapter, image, saliency, class_index)
        mask = normalize_minmax(np.abs(saliency))
        keep = np.stack([np.ones_like(mask), mask])
        original, masked = self.scorer.masked(image, keep, class_index)
        figures = {
            "avgdrop": max(0.0, original - masked) / (original + EPSILON),
            "increase": float(masked > original),
        }
        return {name: figures[name] for name in self.names}

"""Vanilla gradient saliency.

Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image
Classification Models and Saliency Maps", ICLR workshop 2014.

For the class score y^c (the logit, before a softmax or sigmoid) and the raw input pixels x
(0..255, before the model's preprocessing)::

    M^c_ij = max_ch | d y^c / d x_ij,ch |

The map (h x w, at the model's input resolution) is min-max normalized to [0, 1] with an
epsilon, like the CAM maps; it is a heatmap. Gradients are taken with respect to the *raw*
pixels, so they include the preprocessing's scale (a constant factor per channel, which the
normalisation removes for one-scale preprocessing).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.base import BatchMethod
from cnnvis_cli.methods.gradients import logit_gradients
from cnnvis_cli.methods.normalize import minmax_range_tf, normalize_minmax


class Saliency(BatchMethod):
    """Vanilla gradient saliency: max over channels of |d logit / d pixel|, normalized."""

    name = "saliency"
    title = "Saliency"
    pixel_level = True

    def compute(self, raw: Any) -> dict[str, Any]:
        """Unnormalized maps (B, K, h, w), their ranges and the chosen targets."""
        tf, _ = tf_and_keras()
        gradients, targets, forward = logit_gradients(
            self.adapter, raw, lambda f: self.targets.select(f.outputs), self.top_k
        )
        maps = tf.reduce_max(tf.abs(gradients), axis=-1)
        scales = minmax_range_tf(maps, axis=(2, 3))
        return {"maps": maps, "scales": scales, **self.chosen(forward, targets)}

    def finish(self, maps: np.ndarray) -> np.ndarray:
        return normalize_minmax(maps)

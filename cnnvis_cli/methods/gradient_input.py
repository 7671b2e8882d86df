"""Gradient x input: the input gradient weighted by the input itself.

Shrikumar, Greenside, Shcherbina & Kundaje, "Not Just a Black Box: Learning Important Features
Through Propagating Activation Differences", arXiv:1605.01713, 2016.

For the class score y^c (the logit, before a softmax or sigmoid) and the *model input*
X = pre(x) (after the model's preprocessing, in the model's channel order)::

    A^c     = X * d y^c / d X                 (signed, h x w x c)
    M^c_ij  = sum_ch | A^c_ij,ch |            min-max normalized to [0, 1] (a heatmap)

The gradient is taken with respect to the preprocessed tensor itself (the tape watches X inside
the compiled function), so "input" means what the model sees: 0 is black for ``unit``, mid-grey
for ``symmetric`` [-1, 1], the dataset mean for ``caffe``/``torch``. This is what Captum's
``InputXGradient`` and Xplique's ``GradientInput`` compute when handed the model's input; on raw
0..255 pixels (x * dy/dx) the attribution of a ``symmetric`` model would instead be anchored at
black. The channel reduction is Integrated Gradients' (sum of |.| over channels), and as for
Integrated Gradients ``--save-raw`` writes that heatmap, not the signed h x w x c attributions.
Gradient x input is Integrated Gradients with a one-point path from a zero *model input*, for a
model linear in its input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.base import BatchMethod
from cnnvis_cli.methods.gradients import logit_gradients
from cnnvis_cli.methods.normalize import minmax_range_tf, normalize_minmax


class GradientInput(BatchMethod):
    """Gradient x (preprocessed) input: sum over channels of |X * dy/dX|, normalized."""

    name = "gradient-input"
    title = "Gradient x input"
    pixel_level = True

    def attributions(self, raw: Any) -> tuple[Any, dict[str, Any]]:
        """Signed attributions (B, K, h, w, c) X * dy/dX and the chosen targets."""
        tf, _ = tf_and_keras()
        inputs = tf.cast(self.adapter.preprocess(tf.convert_to_tensor(raw, tf.float32)), tf.float32)
        gradients, targets, forward = logit_gradients(
            self.adapter,
            inputs,
            lambda f: self.targets.select(f.outputs),
            self.top_k,
            preprocessed=True,
        )
        return inputs[:, None] * gradients, self.chosen(forward, targets)

    def compute(self, raw: Any) -> dict[str, Any]:
        tf, _ = tf_and_keras()
        attributions, chosen = self.attributions(raw)
        maps = tf.reduce_sum(tf.abs(attributions), axis=-1)
        return {"maps": maps, "scales": minmax_range_tf(maps, axis=(2, 3)), **chosen}

    def finish(self, maps: np.ndarray) -> np.ndarray:
        return normalize_minmax(maps)

"""Ablation-CAM: channels weighted by how much the class score drops when each is zeroed.

Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
Gradient-free Localization", WACV 2020. Gradient-free.

For the activations A^k (k = 1..K) of a layer, the target's score y_c (the *logit*, before a
softmax or sigmoid, as the paper's class score) and y_c^k, the score when channel k of that
layer's output is set to 0 for the rest of the forward pass::

    w_k = (y_c - y_c^k) / |y_c|          (0 when y_c = 0)
    L^c = ReLU( sum_k w_k A^k )          at the layer's resolution, min-max normalized to [0, 1]

The paper divides by y_c; a positive divisor only scales the map (which is normalized), and
|y_c| keeps the weights' meaning ("zeroing k lowers the score") when the logit is negative,
where dividing by y_c would flip every weight. The ablated channel is set to 0 as in the paper
(pytorch-grad-cam's ``AblationLayer`` sets it to min(A) - 1e7 when the layer's minimum is not
0). ``--max-channels N`` ablates only the N channels with the largest activation variance; the
others weigh 0 (pytorch-grad-cam's skipped channels also get weight 0, their score being the
original one).

The ablation replaces the layer's output inside the compiled function (``Capture.replace``
through ``ModelAdapter.forward(edit=...)``), so the user's model is untouched after the call; the
layers before it are recomputed for every copy (as pytorch-grad-cam). Batching, several
``--layer``, ``--aug-smooth`` and ``--eigen-smooth`` are shared with Score-CAM
(``channel_cam.py``).
"""

from __future__ import annotations

from typing import Any

from cnnvis_cli.core.targets import gather_targets
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.channel_cam import ChannelCAM


class AblationCAM(ChannelCAM):
    """Ablation-CAM: relative logit drop when each channel of the layer is zeroed."""

    name = "ablationcam"
    title = "Ablation-CAM"

    def scores(
        self, images: Any, features: Any, factor: Any, targets: Any, pairs: Any, number: int
    ) -> Any:
        """Target logits (n, T) with channel pairs[:, 1] zeroed for image pairs[:, 0]."""
        tf, _ = tf_and_keras()
        index = pairs[:, 0]
        keep = 1.0 - tf.one_hot(pairs[:, 1], int(features.shape[-1]))[:, None, None, :]

        def ablate(output: Any) -> Any:
            return output * tf.cast(keep, output.dtype)

        forward = self.adapter.forward(
            self.model_inputs(tf.gather(images, index), factor),
            preprocessed=True,
            edit=(self.layers[number], ablate),
        )
        return gather_targets(tf.cast(forward.logits, tf.float32), tf.gather(targets, index))

    def weights(self, scores: Any, reference: Any) -> Any:
        tf, _ = tf_and_keras()
        reference = reference[:, None, :]  # (B, 1, T)
        return tf.math.divide_no_nan(reference - scores, tf.abs(reference))

"""LayerCAM: positive gradients x activations, usable on early, high-resolution layers.

Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
IEEE Transactions on Image Processing 30, 2021.

For feature maps A^k of a layer, the class score y^c (the logit) and g^k = dy^c/dA^k::

    L^c = ReLU( sum_k ReLU(g^k) * A^k )    (* element-wise, per position ij)

Each position is weighted by its own positive gradient, so the map stays meaningful on shallow
layers (choose one with ``layer``) where Grad-CAM's averaged weights are noisy. The map is
min-max normalized to [0, 1] at that layer's resolution.
"""

from __future__ import annotations

from typing import Any

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.cam import BaseCAM


def layercam_weighted(features: Any, gradients: Any) -> Any:
    """ReLU(g^k) * A^k for (B, h, w, k) tensors (the map is ReLU of its channel sum)."""
    tf, _ = tf_and_keras()
    return tf.nn.relu(gradients) * features


class LayerCAM(BaseCAM):
    """LayerCAM on one layer."""

    name = "layercam"
    title = "LayerCAM"

    def weighted(self, features: Any, gradients: Any) -> Any:
        return layercam_weighted(features, gradients)

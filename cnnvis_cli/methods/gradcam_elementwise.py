"""Grad-CAM element-wise: positive gradient x activation products, summed over channels.

pytorch-grad-cam's ``GradCAMElementWise`` (Gildenblat et al., the library's own variant). Like
HiResCAM, but each product is rectified before the channel sum, so negative evidence in one
channel cannot cancel positive evidence in another at the same position. For feature maps A^k,
the class score y^c (the logit) and g^k = dy^c/dA^k::

    L^c = ReLU( sum_k ReLU(g^k * A^k) )          (* element-wise, per position ij)

(the outer ReLU is a no-op but kept for the shared ``--eigen-smooth`` path, whose projection can
be negative). The map is min-max normalized to [0, 1].
"""

from __future__ import annotations

from typing import Any

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.cam import BaseCAM


def elementwise_weighted(features: Any, gradients: Any) -> Any:
    """ReLU(g^k * A^k) for (B, h, w, k) tensors (the map is ReLU of its channel sum)."""
    tf, _ = tf_and_keras()
    return tf.nn.relu(gradients * features)


class GradCAMElementWise(BaseCAM):
    """Grad-CAM element-wise on one or more layers."""

    name = "gradcam-elementwise"
    title = "Grad-CAM element-wise"

    def weighted(self, features: Any, gradients: Any) -> Any:
        return elementwise_weighted(features, gradients)

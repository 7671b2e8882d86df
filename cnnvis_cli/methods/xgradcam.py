"""XGrad-CAM: Grad-CAM with axiom-derived, activation-weighted channel weights.

Fu, Hu, Dong, Guo, Gao & Li, "Axiom-based Grad-CAM: Towards Accurate Visualization and
Explanation of CNNs", BMVC 2020.

For feature maps A^k of a layer, the class score y^c (the logit) and g^k = dy^c/dA^k::

    w_k = sum_ij (g^k_ij * A^k_ij) / (sum_ij A^k_ij + eps)
    L^c = ReLU( sum_k w_k A^k )

The weights are the ones that best satisfy the paper's sensitivity and conservation axioms. eps
= 1e-7 as in pytorch-grad-cam's ``XGradCAM``. For non-negative activations (after a ReLU) an
all-zero channel gets weight 0 and a channel with a tiny sum keeps a bounded weight (the
numerator is at most max|g| times the sum); signed activations whose sum is near 0 can give a
large weight, as in the reference. The map is min-max normalized to [0, 1] like Grad-CAM's.
"""

from __future__ import annotations

from typing import Any

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.cam import BaseCAM

XGRAD_EPSILON = 1e-7


def xgradcam_weighted(features: Any, gradients: Any) -> Any:
    """w_k A^k with XGrad-CAM's weights, for (B, h, w, k) tensors -> (B, h, w, k)."""
    tf, _ = tf_and_keras()
    sums = tf.reduce_sum(features, axis=(1, 2), keepdims=True)
    weights = tf.reduce_sum(gradients * features, axis=(1, 2), keepdims=True)
    return features * (weights / (sums + XGRAD_EPSILON))


class XGradCAM(BaseCAM):
    """XGrad-CAM on one or more layers."""

    name = "xgradcam"
    title = "XGrad-CAM"

    def weighted(self, features: Any, gradients: Any) -> Any:
        return xgradcam_weighted(features, gradients)

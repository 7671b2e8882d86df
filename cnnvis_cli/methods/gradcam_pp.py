"""Grad-CAM++: pixel-weighted gradients, better for several instances of a class.

Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep
Convolutional Networks", WACV 2018.

For feature maps A^k of a layer, the class score y^c (the logit) and g = dy^c/dA, the paper
differentiates S = exp(y^c). Treating y^c as piecewise linear in A (ReLU networks), the
derivatives of S are S g, S g^2 and S g^3, and S cancels in the closed-form pixel weights::

    alpha_ij^k = g_ij^2 / (2 g_ij^2 + sum_ab A_ab^k g_ij^3)      (0 where the denominator is 0)
    w_k        = sum_ij alpha_ij^k ReLU(S g_ij^k)  ~  sum_ij alpha_ij^k ReLU(g_ij^k)
    L^c        = ReLU( sum_k w_k A^k )

The positive factor S only scales the map, which is min-max normalized like Grad-CAM's, so the
standard form without S is used. No additive epsilon is put in the denominator: logit gradients
are often 1e-3 or smaller, where an epsilon of 1e-6 would change alpha; a zero denominator gives
alpha = 0 instead (``divide_no_nan``).
"""

from __future__ import annotations

from typing import Any

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.cam import BaseCAM


def gradcam_pp_weighted(features: Any, gradients: Any) -> Any:
    """w_k A^k with the Grad-CAM++ weights, for (B, h, w, k) tensors -> (B, h, w, k)."""
    tf, _ = tf_and_keras()
    squared = tf.square(gradients)
    activation_sums = tf.reduce_sum(features, axis=(1, 2), keepdims=True)  # sum_ab A_ab^k
    alpha = tf.math.divide_no_nan(squared, 2.0 * squared + activation_sums * squared * gradients)
    weights = tf.reduce_sum(alpha * tf.nn.relu(gradients), axis=(1, 2), keepdims=True)
    return features * weights


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ on one layer."""

    name = "gradcam-pp"
    title = "Grad-CAM++"

    def weighted(self, features: Any, gradients: Any) -> Any:
        return gradcam_pp_weighted(features, gradients)

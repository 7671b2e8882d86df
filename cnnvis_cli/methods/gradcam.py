"""Grad-CAM: class activation maps from gradients.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017.

For feature maps A^k of a convolutional layer and the score y^c of class c (the logit, before a
softmax or sigmoid)::

    alpha_k^c = 1/(h w) * sum_{i,j} d y^c / d A^k_{ij}     (spatial mean of the gradient)
    L^c       = ReLU( sum_k alpha_k^c A^k )

The map is min-max normalized to [0, 1] with an epsilon (an all-zero map stays zero) and later
upsampled bilinearly to the input image's own resolution. For ``conv -> global average pooling
-> dense`` the gradient is W[k, c] / (h w) everywhere, so Grad-CAM reduces to CAM
(Zhou et al., 2016).
"""

from __future__ import annotations

from typing import Any

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.cam import BaseCAM


def gradcam_weighted(features: Any, gradients: Any) -> Any:
    """mean_ij(dY/dA^k) * A^k for (B, h, w, k) tensors -> (B, h, w, k)."""
    tf, _ = tf_and_keras()
    return features * tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)


class GradCAM(BaseCAM):
    """Grad-CAM on one layer."""

    name = "gradcam"
    title = "Grad-CAM"

    def weighted(self, features: Any, gradients: Any) -> Any:
        return gradcam_weighted(features, gradients)

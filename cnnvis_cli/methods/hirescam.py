"""HiResCAM: element-wise gradient x activation, without Grad-CAM's spatial averaging.

Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
neural networks", arXiv:2011.08891, 2020.

For feature maps A^k of a layer, the class score y^c (the logit) and g^k = dy^c/dA^k::

    L^c = ReLU( sum_k g^k * A^k )          (* element-wise, per position ij)

The map is min-max normalized to [0, 1] like Grad-CAM's. When the gradient is spatially uniform
(``conv -> global average pooling -> dense``) HiResCAM equals Grad-CAM; when it is not (e.g. a
flatten -> dense head) it shows the positions that actually raise the score.
"""

from __future__ import annotations

from typing import Any

from cnnvis_cli.methods.cam import BaseCAM


def hirescam_weighted(features: Any, gradients: Any) -> Any:
    """g^k * A^k for (B, h, w, k) tensors (the map is ReLU of its channel sum)."""
    return gradients * features


class HiResCAM(BaseCAM):
    """HiResCAM on one layer."""

    name = "hirescam"
    title = "HiResCAM"

    def weighted(self, features: Any, gradients: Any) -> Any:
        return hirescam_weighted(features, gradients)

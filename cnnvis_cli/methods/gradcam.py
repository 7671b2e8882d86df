"""Grad-CAM: class activation maps from gradients.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017.

For feature maps A^k of a convolutional layer and the score y^c of class c (the logit, before a
softmax or sigmoid)::

    alpha_k^c = 1/(h w) * sum_{i,j} d y^c / d A^k_{ij}     (spatial mean of the gradient)
    L^c       = ReLU( sum_k alpha_k^c A^k )

The map is min-max normalised to [0, 1] with an epsilon (an all-zero map stays zero) and later
upsampled bilinearly to the input image's own resolution. For ``conv -> global average pooling
-> dense`` the gradient is W[k, c] / (h w) everywhere, so Grad-CAM reduces to CAM
(Zhou et al., 2016).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from cnnvis_cli._tf import tf_and_keras
from cnnvis_cli.methods.base import (
    Explanation,
    Method,
    ProgressCallback,
    explanations_from,
    gather_targets,
    normalize_maps,
)
from cnnvis_cli.model import ModelAdapter


def gradcam_maps(features: Any, gradients: Any) -> Any:
    """ReLU(sum_k mean_ij(dY/dA^k) * A^k), unnormalised, for (B, h, w, k) tensors -> (B, h, w)."""
    tf, _ = tf_and_keras()
    weights = tf.reduce_mean(gradients, axis=(1, 2))
    return tf.nn.relu(tf.einsum("bhwk,bk->bhw", features, weights))


class BaseCAM(Method):
    """A class activation map from one layer's features A and gradients g = dy^c/dA.

    Subclasses define ``cam(features, gradients)``: the unnormalised (B, h, w) map for (B, h, w, k)
    tensors (pytorch-grad-cam style). This class taps the layer (``layer``: a path or name; None
    picks the last spatial layer), selects the targets, takes one gradient per target and
    min-max normalises each map, in one compiled function traced once per input shape.
    """

    def __init__(self, adapter: ModelAdapter, *, layer: str | None = None, **kwargs: Any) -> None:
        super().__init__(adapter, **kwargs)
        self.layer = adapter.resolve_layer(layer)
        self._compiled = self.compile(self.compute)

    @abstractmethod
    def cam(self, features: Any, gradients: Any) -> Any:
        """The unnormalised map (B, h, w) from features and gradients (B, h, w, k), float32."""

    def params(self) -> dict[str, Any]:
        return {**super().params(), "layer": self.layer.path}

    def compute(self, raw: Any) -> tuple[Any, Any, Any]:
        """Normalised maps (B, K, h, w), targets (B, K) and target outputs (B, K)."""
        tf, _ = tf_and_keras()
        with tf.GradientTape(persistent=self.top_k > 1) as tape:
            forward = self.adapter.forward(raw, self.layer)
            targets = self.select_targets(forward.outputs)
            target_scores = gather_targets(forward.scores, targets)
            per_target = [target_scores[:, k] for k in range(self.top_k)]
        features = tf.cast(forward.features, tf.float32)
        maps = []
        for score in per_target:
            gradients = tf.cast(tape.gradient(score, forward.features), tf.float32)
            maps.append(normalize_maps(self.cam(features, gradients)))
        del tape
        return tf.stack(maps, axis=1), targets, gather_targets(forward.outputs, targets)

    def _explain(self, images: np.ndarray, progress: ProgressCallback | None) -> list[Explanation]:
        maps, targets, scores = self._compiled(images)
        return explanations_from(maps.numpy(), targets.numpy(), scores.numpy())


class GradCAM(BaseCAM):
    """Grad-CAM on one layer (``layer``: a path or name; None picks the last spatial layer)."""

    name = "gradcam"
    title = "Grad-CAM"

    def cam(self, features: Any, gradients: Any) -> Any:
        return gradcam_maps(features, gradients)

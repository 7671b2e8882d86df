"""The class-activation-map family's shared machinery: one layer, its features and gradients.

For the feature maps A^k (k = 1..K) of a convolutional layer and the target's score y^c (the
logit, before a softmax or sigmoid), with g^k = d y^c / d A^k, each CAM method defines the
unnormalised map ``cam(A, g)`` (pytorch-grad-cam's ``BaseCAM`` is the model for this split). This
class captures the layer (``--layer``, or the last layer whose output keeps the image's axes),
takes one gradient per target inside one compiled function, and min-max normalizes each map to
[0, 1] with an epsilon (an all-zero map stays zero).

Conventions (where implementations differ): ReLU is applied at the layer's resolution, *before*
upsampling; the map is then upsampled to the input image's own resolution by the renderer,
bilinearly with half-pixel centres (OpenCV ``INTER_LINEAR``; ``--upsample bicubic|corners``
reproduces Xplique's bicubic and tf-keras-vis' align-corners resizing).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.base import BatchMethod
from cnnvis_cli.methods.gradients import logit_gradients
from cnnvis_cli.methods.normalize import minmax_range_tf, normalize_minmax_tf
from cnnvis_cli.options import Options, option


@dataclass(frozen=True)
class LayerOptions(Options):
    """Options of a method that reads one layer's feature maps."""

    layer: str | None = option(
        None,
        "Layer for the map (a path through nested models, see `cnnvis layers`); default: the "
        "last layer whose output keeps the image's axes.",
        metavar="PATH",
    )


class BaseCAM(BatchMethod):
    """A class activation map from one layer's features A and gradients g = dy^c/dA."""

    options_type = LayerOptions

    def __init__(self, adapter: ModelAdapter, options: LayerOptions | None = None, **kwargs: Any):
        super().__init__(adapter, options, **kwargs)
        self.layer = adapter.resolve_layer(self.options.layer)

    @abstractmethod
    def cam(self, features: Any, gradients: Any) -> Any:
        """The unnormalised map (B, h, w) from features and gradients (B, h, w, k), float32."""

    def params(self) -> dict[str, Any]:
        return {**super().params(), "layer": self.layer.path}

    def compute(self, raw: Any) -> dict[str, Any]:
        """Normalised maps (B, K, h, w), their ranges (B, K) and the chosen targets."""
        tf, _ = tf_and_keras()
        gradients, targets, forward = logit_gradients(
            self.adapter,
            raw,
            lambda f: self.targets.select(f.outputs),
            self.top_k,
            layer=self.layer,
        )
        features = tf.cast(forward.features, tf.float32)
        cams = [self.cam(features, gradients[:, k]) for k in range(self.top_k)]
        return {
            "maps": tf.stack([normalize_minmax_tf(cam) for cam in cams], axis=1),
            "scales": tf.stack([minmax_range_tf(cam) for cam in cams], axis=1),
            **self.chosen(forward, targets),
        }

"""Score-CAM: class activation maps weighted by the score of each channel's masked input.

Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
CVPR Workshops 2020. Gradient-free: each channel of a convolutional layer is used as a soft mask
on the input, and the channel is weighted by how much of the target the masked input keeps.

For an image x, its model input X = pre(x) (after the model's preprocessing), its target class c
and the activations A^k (k = 1..K) of the chosen layer::

    H^k   = norm(up(A^k))           bilinear upsampling (half-pixel centres) to the input size,
                                    min-max to [0, 1]; a constant map gives H^k = 0
    s_k   = f_c(X * H^k)            the masked *model input* scored by the model (masked-out
                                    pixels become 0 in model space: the dataset mean for
                                    mean/std preprocessing)
    L^c   = ReLU(sum_k a_k A^k)     at the layer's resolution, then min-max normalized to [0, 1]

Channel weights a_k (``--channel-weights``):

- ``paper`` (default, the authors' reference code): a_k = the target's *probability* on the
  masked input (the softmax output for softmax heads, the sigmoid for sigmoid heads, softmax
  over the logits for a linear head). The paper's "increase of confidence" subtracts the
  baseline score f_c(X_b), the same for every k; the reference code leaves it out and so does
  this default.
- ``logit-softmax`` (pytorch-grad-cam): a_k = softmax over channels of the target's *logit* on
  the masked inputs.

``--mask-space raw`` multiplies the raw 0..255 pixels instead (masked-out pixels black before
preprocessing), for comparison with tools that mask images before normalising them.

Faster Score-CAM (``--max-channels N``): only the N channels whose activation maps have the
largest spatial variance (per image) are scored and summed.

The batching, ``--max-channels``, ``--eigen-smooth``, several ``--layer`` and ``--aug-smooth``
(the masks are those of each augmented variant's own activations; ``mask-space model`` masks the
variant's model input X' = factor x pre(flip(x)), ``raw`` the flipped raw pixels before the
factor) are shared with Ablation-CAM: see ``channel_cam.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnvis_cli.core.targets import gather_targets
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.channel_cam import ChannelCAM, ChannelFacts, ChannelOptions
from cnnvis_cli.options import option

CHANNEL_WEIGHTS = ("paper", "logit-softmax")
MASK_SPACES = ("model", "raw")

__all__ = ["ChannelFacts", "ScoreCAM", "ScoreCAMOptions", "channel_masks"]


@dataclass(frozen=True)
class ScoreCAMOptions(ChannelOptions):
    channel_weights: str = option(
        "paper",
        "paper: the target's probability on each masked input (Wang et al.) | logit-softmax: "
        "softmax over channels of the target's logit (pytorch-grad-cam).",
        metavar="paper|logit-softmax",
    )
    mask_space: str = option(
        "model",
        "model: mask the preprocessed model input (as the paper) | raw: mask raw pixels.",
        metavar="model|raw",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.channel_weights not in CHANNEL_WEIGHTS:
            raise ValueError(
                f"unknown --channel-weights {self.channel_weights!r}; use "
                f"{' or '.join(CHANNEL_WEIGHTS)}"
            )
        if self.mask_space not in MASK_SPACES:
            raise ValueError(
                f"unknown --mask-space {self.mask_space!r}; use {' or '.join(MASK_SPACES)}"
            )


def channel_masks(features: Any, size: Any) -> Any:
    """Upsample (n, h, w) activation maps bilinearly to ``size`` and min-max them to [0, 1].

    Returns (n, H, W, 1) float32 masks; a constant map gives an all-zero mask.
    """
    tf, _ = tf_and_keras()
    up = tf.image.resize(tf.cast(features, tf.float32)[..., None], size, method="bilinear")
    low = tf.reduce_min(up, axis=(1, 2, 3), keepdims=True)
    high = tf.reduce_max(up, axis=(1, 2, 3), keepdims=True)
    spread = high - low
    return tf.where(spread > 0, (up - low) / tf.where(spread > 0, spread, 1.0), 0.0)


class ScoreCAM(ChannelCAM):
    """Score-CAM (see the module docstring for the two weightings)."""

    name = "scorecam"
    title = "Score-CAM"
    options_type = ScoreCAMOptions

    def notes(self) -> list[str]:
        if self.adapter.input_size is None and self.batching.evaluations == 1:
            return [
                "Score-CAM: one masked input per forward pass (one per channel of the layer); "
                "--max-channels makes it faster"
            ]
        return []

    def _probabilities(self, forward: Any, targets: Any) -> Any:
        """Per-target channel scores (n, T): probabilities (paper) or logits (logit-softmax)."""
        tf, _ = tf_and_keras()
        if self.options.channel_weights == "logit-softmax":
            return gather_targets(forward.logits, targets)
        if self.adapter.head == "linear":
            return gather_targets(tf.nn.softmax(forward.logits, axis=-1), targets)
        return gather_targets(forward.outputs, targets)

    def scores(
        self, images: Any, features: Any, factor: Any, targets: Any, pairs: Any, number: int
    ) -> Any:
        """Scores (n, T) of the inputs masked by channel pairs[:, 1] of image pairs[:, 0]."""
        tf, _ = tf_and_keras()
        index = pairs[:, 0]
        chosen = tf.gather(images, index)
        maps = tf.gather_nd(tf.transpose(features, [0, 3, 1, 2]), pairs)  # (n, h, w)
        size = tf.shape(images)[1:3]
        if images.shape[1] is not None and images.shape[2] is not None:
            size = (int(images.shape[1]), int(images.shape[2]))
        masks = channel_masks(maps, size)  # (n, H, W, 1)
        if self.options.mask_space == "model":
            inputs = self.model_inputs(chosen, factor) * masks
        else:
            inputs = self.model_inputs(chosen * masks, factor)
        forward = self.adapter.forward(inputs, preprocessed=True)
        return self._probabilities(forward, tf.gather(targets, index))

    def weights(self, scores: Any, reference: Any) -> Any:
        tf, _ = tf_and_keras()
        if self.options.channel_weights == "logit-softmax":
            return tf.nn.softmax(scores, axis=1)  # over channels
        return scores

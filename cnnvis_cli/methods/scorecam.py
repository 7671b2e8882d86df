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

Memory does not grow with K: the masked inputs are built inside one compiled function,
``--eval-batch`` (image, channel) pairs at a time (equal chunks, the last padded, so the function
is traced once per input shape); only the layer's activations (B, h, w, K) are kept for the
batch. One masked forward pass scores every target of an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.batching import chunks, pad_rows
from cnnvis_cli.core.targets import gather_targets
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.base import Explanation, Facts, Method, ProgressCallback, explanations_from
from cnnvis_cli.methods.cam import LayerOptions
from cnnvis_cli.methods.normalize import minmax_range_tf, normalize_minmax_tf
from cnnvis_cli.options import check_range, option

CHANNEL_WEIGHTS = ("paper", "logit-softmax")
MASK_SPACES = ("model", "raw")


@dataclass(frozen=True)
class ScoreCAMOptions(LayerOptions):
    max_channels: int | None = option(
        None,
        "Faster Score-CAM: score only the N channels with the largest activation variance.",
        metavar="N",
        min=1,
    )
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
        check_range("--max-channels", self.max_channels, 1)
        if self.channel_weights not in CHANNEL_WEIGHTS:
            raise ValueError(
                f"unknown --channel-weights {self.channel_weights!r}; use "
                f"{' or '.join(CHANNEL_WEIGHTS)}"
            )
        if self.mask_space not in MASK_SPACES:
            raise ValueError(
                f"unknown --mask-space {self.mask_space!r}; use {' or '.join(MASK_SPACES)}"
            )


@dataclass(frozen=True)
class ChannelFacts(Facts):
    """The channels that were scored (all, or the largest-variance ones)."""

    channels: list[int]


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


class ScoreCAM(Method):
    """Score-CAM on one layer (see the module docstring for the two weightings)."""

    name = "scorecam"
    title = "Score-CAM"
    options_type = ScoreCAMOptions

    def __init__(self, adapter: ModelAdapter, options: ScoreCAMOptions | None = None, **kwargs):
        super().__init__(adapter, options, **kwargs)
        self.layer = adapter.resolve_layer(self.options.layer)
        shape = self.layer.output_shape
        self.channels: int | None = int(shape[-1]) if shape and shape[-1] else None
        self._features = self.compile(self._features_fn)
        self._masked = self.compile(self._masked_fn)
        self._combine = self.compile(self._combine_fn)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "layer": self.layer.path, "channels": self.channels}

    def notes(self) -> list[str]:
        if self.adapter.input_size is None and self.batching.evaluations == 1:
            return [
                "Score-CAM: one masked input per forward pass (one per channel of the layer); "
                "--max-channels makes it faster"
            ]
        return []

    # -- compiled functions -------------------------------------------------------------------

    def _features_fn(self, raw: Any) -> dict[str, Any]:
        """Activations (B, h, w, K), the chosen targets and the channels to score (B, N)."""
        tf, _ = tf_and_keras()
        forward = self.adapter.forward(raw, self.layer)
        features = tf.cast(forward.features, tf.float32)
        channels = int(features.shape[-1])
        limit = self.options.max_channels
        if limit is None or limit >= channels:
            batch = tf.shape(features)[0]
            selected = tf.tile(tf.range(channels, dtype=tf.int32)[None], [batch, 1])
        else:
            variance = tf.math.reduce_variance(features, axis=(1, 2))
            selected = tf.math.top_k(variance, k=limit).indices
        return {"features": features, "selected": selected, **self.chosen(forward)}

    def _scores(self, forward: Any, targets: Any) -> Any:
        """Per-target channel scores (n, T): probabilities (paper) or logits (logit-softmax)."""
        tf, _ = tf_and_keras()
        if self.options.channel_weights == "logit-softmax":
            return gather_targets(forward.logits, targets)
        if self.adapter.head == "linear":
            return gather_targets(tf.nn.softmax(forward.logits, axis=-1), targets)
        return gather_targets(forward.outputs, targets)

    def _masked_fn(self, images: Any, features: Any, targets: Any, pairs: Any) -> Any:
        """Channel scores (n, T) of n masked inputs: ``pairs`` (n, 2) int32 rows are
        (image index into ``images``/``features``/``targets``, channel index)."""
        tf, _ = tf_and_keras()
        index = pairs[:, 0]
        maps = tf.gather_nd(tf.transpose(features, [0, 3, 1, 2]), pairs)  # (n, h, w)
        size = tf.shape(images)[1:3]
        if images.shape[1] is not None and images.shape[2] is not None:
            size = (int(images.shape[1]), int(images.shape[2]))
        masks = channel_masks(maps, size)  # (n, H, W, 1)
        chosen = tf.gather(images, index)
        if self.options.mask_space == "model":
            forward = self.adapter.forward(
                self.adapter.preprocess(chosen) * masks, preprocessed=True
            )
        else:
            forward = self.adapter.forward(chosen * masks)
        return self._scores(forward, tf.gather(targets, index))

    def _combine_fn(self, features: Any, selected: Any, scores: Any) -> Any:
        """Normalized maps (B, T, h, w) and their ranges (B, T) from activations (B, h, w, K),
        the scored channels (B, N) and their scores (B, N, T)."""
        tf, _ = tf_and_keras()
        used = tf.gather(features, selected, axis=3, batch_dims=1)  # (B, h, w, N)
        weights = scores
        if self.options.channel_weights == "logit-softmax":
            weights = tf.nn.softmax(scores, axis=1)  # over channels
        maps = tf.nn.relu(tf.einsum("bhwn,bnt->bhwt", used, weights))
        maps_first = tf.transpose(normalize_minmax_tf(maps), [0, 3, 1, 2])
        return {"maps": maps_first, "scales": minmax_range_tf(maps)}

    # -- computation ----------------------------------------------------------------------------

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        """Explain N raw images; ``batching.evaluations`` masked inputs per compiled call."""
        tf, _ = tf_and_keras()
        images = np.asarray(images, dtype=np.float32)
        count = len(images)
        step = self.batching.images if self.adapter.input_size is not None else 1
        explanations: list[Explanation] = []
        starts = range(0, count, step)
        for number, start in enumerate(starts):

            def report(fraction: float, number: int = number) -> None:
                if progress is not None:
                    progress((number + fraction) / len(starts))

            chunk = images[start : start + step]
            real = len(chunk)
            padded = tf.constant(pad_rows(chunk, step))  # one batch shape for the functions
            explanations.extend(self._explain_padded(padded, real, report))
        return explanations

    def _explain_padded(self, images: Any, real: int, report: Any) -> list[Explanation]:
        """Explain the first ``real`` images of a padded batch tensor (B, H, W, C)."""
        tf, _ = tf_and_keras()
        first = self._features(images)
        selected = first["selected"].numpy()
        used = selected.shape[1]
        rows = np.repeat(np.arange(real), used)
        pairs = np.stack([rows, selected[:real].reshape(-1)], axis=1).astype(np.int32)
        scores = np.zeros((len(selected) * used, self.top_k), dtype=np.float32)
        for chunk in chunks(len(pairs), self.batching.evaluations):
            result = self._masked(
                images, first["features"], first["targets"], tf.constant(pairs[chunk.index])
            ).numpy()
            scores[chunk.index[: chunk.real]] = result[: chunk.real]
            report(chunk.done)
        scores = scores.reshape(len(selected), used, self.top_k)
        combined = self._combine(first["features"], first["selected"], tf.constant(scores))
        chosen = {k: first[k] for k in ("targets", "outputs", "predicted", "predicted_output")}
        facts = [ChannelFacts([int(k) for k in selected[b]]) for b in range(real)]
        return explanations_from({**chosen, **combined}, self.kind, real, facts)

"""Score-CAM: class activation maps weighted by the score of each channel's masked input.

Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
CVPR Workshops 2020. Gradient-free: each channel of a convolutional layer is used as a soft mask
on the input, and the channel is weighted by how much of the target's output the masked input
keeps.

For an image x, its target class c and the activations A^k (k = 1..K) of the chosen layer::

    H^k   = minmax(up(A^k))         bilinear upsampling to the input size, min-max to [0, 1]
                                    (a constant map gives H^k = 0)
    s_k   = f_c(x * H^k)            the model's *output* for c (a probability for softmax and
                                    sigmoid heads, as in the paper); x * H^k is taken on the raw
                                    0..255 pixels, *before* the model's preprocessing
    a_k   = softmax_k(s_k)
    L^c   = ReLU(sum_k a_k A^k)     at the layer's resolution, then min-max normalised to [0, 1]
                                    with an epsilon like Grad-CAM (an all-zero map stays zero)

The paper's "channel-wise increase of confidence" subtracts the baseline score f_c(x_b) from
every s_k; a softmax is invariant to a shift shared by all k, so the weights are the same and
the subtraction is skipped.

Faster Score-CAM (Wang et al., 2020; ``max_channels = N``): only the N channels whose
activation maps have the largest *spatial variance* (per image) are scored and summed.

Memory does not grow with K: the masked inputs are built inside one compiled function,
``batch_size`` (image, channel) pairs at a time (the last chunk is padded, so the function is
traced once per input shape). Only the layer's activations (B, h, w, K) are kept for the whole
batch. One masked forward pass gives every class's output, so the ``top_k`` targets of an image
share the same passes. Progress is reported after each chunk.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnvis_cli._tf import tf_and_keras
from cnnvis_cli.methods.base import (
    Explanation,
    Method,
    ProgressCallback,
    gather_targets,
    normalize_maps,
)
from cnnvis_cli.model import ModelAdapter


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
    """Score-CAM on one layer (``layer``: a path or name; None picks the last spatial layer).

    Args:
        layer: the convolutional layer whose channels are the masks.
        max_channels: Faster Score-CAM: score only the N channels with the largest spatial
            variance of their activations (per image); None scores all K channels.
        **kwargs: ``class_index``, ``top_k`` and ``batch_size`` (masked inputs per call).
    """

    name = "scorecam"
    batch_counts_images = False
    title = "Score-CAM"
    signed = False

    def __init__(
        self,
        adapter: ModelAdapter,
        *,
        layer: str | None = None,
        max_channels: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(adapter, **kwargs)
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if max_channels is not None and int(max_channels) < 1:
            raise ValueError(f"--max-channels must be at least 1, got {max_channels}")
        self.layer = adapter.resolve_layer(layer)
        self.max_channels = None if max_channels is None else int(max_channels)
        shape = self.layer.output_shape
        self.channels: int | None = int(shape[-1]) if shape and shape[-1] else None
        self._features = self.compile(self._features_fn)
        self._masked = self.compile(self._masked_fn)
        self._combine = self.compile(self._combine_fn)

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "layer": self.layer.path,
            "max_channels": self.max_channels,
            "channels": self.channels,
        }

    def notes(self) -> list[str]:
        if self.adapter.input_size is None and self.batch_size == 1:
            return [
                "Score-CAM: the model's input size is dynamic, so each masked input runs as its "
                "own forward pass (one per channel of the layer); --max-channels makes it faster"
            ]
        return []

    # -- compiled functions -------------------------------------------------------------------

    def _features_fn(self, raw: Any) -> tuple[Any, Any, Any, Any]:
        """Activations (B, h, w, K), targets (B, T), their outputs (B, T) and the channels
        to score (B, N), largest spatial variance first when ``max_channels`` is set."""
        tf, _ = tf_and_keras()
        forward = self.adapter.forward(raw, self.layer)
        features = tf.cast(forward.features, tf.float32)
        targets = self.select_targets(forward.outputs)
        channels = int(features.shape[-1])
        if self.max_channels is None or self.max_channels >= channels:
            batch = tf.shape(features)[0]
            selected = tf.tile(tf.range(channels, dtype=tf.int32)[None], [batch, 1])
        else:
            variance = tf.math.reduce_variance(features, axis=(1, 2))
            selected = tf.math.top_k(variance, k=self.max_channels).indices
        return features, targets, gather_targets(forward.outputs, targets), selected

    def _masked_fn(self, images: Any, features: Any, targets: Any, pairs: Any) -> Any:
        """Target outputs (n, T) of n masked inputs: ``pairs`` (n, 2) int32 rows are
        (image index into ``images``/``features``/``targets``, channel index)."""
        tf, _ = tf_and_keras()
        index = pairs[:, 0]
        maps = tf.gather_nd(tf.transpose(features, [0, 3, 1, 2]), pairs)  # (n, h, w)
        size = tf.shape(images)[1:3]
        if images.shape[1] is not None and images.shape[2] is not None:
            size = (int(images.shape[1]), int(images.shape[2]))
        masks = channel_masks(maps, size)  # (n, H, W, 1)
        masked = tf.gather(images, index) * masks  # raw pixels, before preprocessing
        outputs = self.adapter.forward(masked).outputs
        return gather_targets(outputs, tf.gather(targets, index))

    def _combine_fn(self, features: Any, selected: Any, scores: Any) -> Any:
        """Normalised maps (B, T, h, w) from activations (B, h, w, K), the scored channels
        (B, N) and their masked scores (B, N, T)."""
        tf, _ = tf_and_keras()
        used = tf.gather(features, selected, axis=3, batch_dims=1)  # (B, h, w, N)
        weights = tf.nn.softmax(scores, axis=1)  # over channels
        maps = tf.nn.relu(tf.einsum("bhwn,bnt->bhwt", used, weights))
        return tf.transpose(normalize_maps(maps), [0, 3, 1, 2])

    # -- computation ----------------------------------------------------------------------------

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        """Explain N raw images (N x h x w x c float32). The batch is padded for the compiled
        functions, but only the real images' channels are scored (``batch_size`` counts masked
        inputs per call)."""
        if len(images) == 0:
            return []
        return self._explain(np.asarray(images, dtype=np.float32), progress)

    def _explain(self, images: np.ndarray, progress: ProgressCallback | None) -> list[Explanation]:
        tf, _ = tf_and_keras()
        images = np.asarray(images, dtype=np.float32)
        count = len(images)
        step = self.batch_size if self.adapter.input_size is not None else count
        starts = range(0, count, step)
        explanations: list[Explanation] = []
        for number, start in enumerate(starts):

            def report(fraction: float, number: int = number) -> None:
                if progress is not None:
                    progress((number + fraction) / len(starts))

            chunk = images[start : start + step]
            real = len(chunk)
            if real < step:  # pad so the compiled functions see one batch shape
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - real, axis=0)])
            explanations.extend(self._explain_padded(tf.constant(chunk), real, report))
        return explanations

    def _explain_padded(self, images: Any, real: int, report: Any) -> list[Explanation]:
        """Explain the first ``real`` images of a padded batch tensor (B, H, W, C); ``report``
        gets the fraction of this batch's masked inputs scored after each chunk."""
        tf, _ = tf_and_keras()
        features, targets, base, selected = self._features(images)
        selected_np = selected.numpy()
        used = selected_np.shape[1]
        rows = np.repeat(np.arange(real), used)
        pairs = np.stack([rows, selected_np[:real].reshape(-1)], axis=1).astype(np.int32)
        total, n = len(pairs), self.batch_size
        scores = np.zeros((len(selected_np) * used, self.top_k), dtype=np.float32)
        chunks = math.ceil(total / n)
        for chunk in range(chunks):
            index = np.arange(chunk * n, (chunk + 1) * n) % total  # pad by wrapping around
            result = self._masked(images, features, targets, tf.constant(pairs[index])).numpy()
            length = min(n, total - chunk * n)
            scores[chunk * n : chunk * n + length] = result[:length]
            report((chunk + 1) / chunks)
        scores = scores.reshape(len(selected_np), used, self.top_k)
        maps = self._combine(features, selected, tf.constant(scores)).numpy()
        targets_np, base_np = targets.numpy(), base.numpy()
        return [
            Explanation(
                class_indices=[int(c) for c in targets_np[b]],
                scores=[float(s) for s in base_np[b]],
                maps=[np.asarray(m, dtype=np.float32) for m in maps[b]],
                extras={"channels": [int(k) for k in selected_np[b]]},
            )
            for b in range(real)
        ]

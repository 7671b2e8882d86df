"""Vanilla gradient saliency, and the input-gradient machinery shared with SmoothGrad and IG.

Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image
Classification Models and Saliency Maps", ICLR workshop 2014.

For the class score y^c (the logit, before a softmax or sigmoid) and the raw input pixels x
(0..255, before the model's preprocessing)::

    M^c_ij = max_ch | d y^c / d x_ij,ch |

The map (h x w, at the model's input resolution) is min-max normalised to [0, 1] with an
epsilon, like the CAM maps; it is a heatmap (``signed = False``).

``SampledGradients`` is the base of the methods that combine the input gradients of many
modified copies of each image (SmoothGrad's noisy copies, Integrated Gradients' path points):
targets come from the *original* images, and the copies go through one compiled function
``batch_size`` at a time (the last chunk padded by wrapping around), so memory does not grow
with the number of copies and the function is traced once per input shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cnnvis_cli._tf import tf_and_keras
from cnnvis_cli.methods.base import (
    Explanation,
    Method,
    ProgressCallback,
    explanations_from,
    gather_targets,
)
from cnnvis_cli.model import Forward, ModelAdapter

EPSILON = 1e-8


def input_gradients(
    adapter: ModelAdapter, raw: Any, choose: Callable[[Forward], Any], top_k: int
) -> tuple[Any, Any, Forward]:
    """Gradients (B, K, h, w, c) of the target logits w.r.t. raw pixels, targets, forward pass.

    ``choose(forward)`` returns the (B, K) int32 targets, K = ``top_k``.
    """
    tf, _ = tf_and_keras()
    raw = tf.convert_to_tensor(raw, tf.float32)
    with tf.GradientTape(persistent=top_k > 1) as tape:
        tape.watch(raw)
        forward = adapter.forward(raw)
        targets = choose(forward)
        target_scores = gather_targets(forward.scores, targets)
        per_target = [target_scores[:, k] for k in range(top_k)]
    gradients = []
    for score in per_target:
        gradient = tape.gradient(score, raw)
        gradients.append(tf.zeros_like(raw) if gradient is None else gradient)
    del tape
    return tf.cast(tf.stack(gradients, axis=1), tf.float32), targets, forward


def normalise_heatmaps(maps: np.ndarray) -> np.ndarray:
    """Min-max normalise each map over its last two (spatial) axes to [0, 1], as float32."""
    maps = np.asarray(maps, dtype=np.float64)
    low = maps.min(axis=(-2, -1), keepdims=True)
    high = maps.max(axis=(-2, -1), keepdims=True)
    return ((maps - low) / (high - low + EPSILON)).astype(np.float32)


class Saliency(Method):
    """Vanilla gradient saliency: max over channels of |d logit / d pixel|, normalised."""

    name = "saliency"
    title = "Saliency"

    def __init__(self, adapter: ModelAdapter, **kwargs: Any) -> None:
        super().__init__(adapter, **kwargs)
        self._compiled = self.compile(self.compute)

    def compute(self, raw: Any) -> tuple[Any, Any, Any]:
        """Unnormalised maps (B, K, h, w), targets (B, K) and target outputs (B, K)."""
        tf, _ = tf_and_keras()
        gradients, targets, forward = input_gradients(
            self.adapter, raw, lambda f: self.select_targets(f.outputs), self.top_k
        )
        maps = tf.reduce_max(tf.abs(gradients), axis=-1)
        return maps, targets, gather_targets(forward.outputs, targets)

    def _explain(self, images: np.ndarray, progress: ProgressCallback | None) -> list[Explanation]:
        maps, targets, scores = self._compiled(images)
        return explanations_from(normalise_heatmaps(maps.numpy()), targets.numpy(), scores.numpy())


class SampledGradients(Method):
    """Base: input gradients of many copies per image, ``batch_size`` copies per compiled call.

    Images are not padded (``batch_size`` counts copies); the targets are predicted on the
    original images by ``Method.predict_targets``.
    """

    def __init__(self, adapter: ModelAdapter, **kwargs: Any) -> None:
        super().__init__(adapter, **kwargs)
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        """Explain N raw images (N x h x w x c float32) without padding them."""
        if len(images) == 0:
            return []
        return self._explain(np.asarray(images, dtype=np.float32), progress)

    def chunks(self, total: int) -> Iterator[tuple[np.ndarray, int, float]]:
        """(row indices of length batch_size, real rows, fraction done after it) per chunk."""
        n = self.batch_size
        count = -(-total // n)
        for chunk in range(count):
            rows = np.arange(chunk * n, (chunk + 1) * n) % total  # pad by wrapping around
            yield rows, min(n, total - chunk * n), (chunk + 1) / count

"""SmoothGrad: saliency averaged over noisy copies of the image.

Smilkov, Thorat, Kim, Viégas & Wattenberg, "SmoothGrad: removing noise by adding noise",
ICML workshop 2017.

For the class score y^c (the logit) and raw pixels x (0..255, before preprocessing)::

    sigma    = noise * (x_max - x_min) = noise * 255           (noise level on the raw scale)
    eps_s    ~ N(0, sigma^2),  s = 0 .. n - 1
    G^c      = 1/n * sum_s d y^c / d x  at  x + eps_s
    M^c_ij   = max_ch | G^c_ij,ch |                            (absolute value of the mean)

The map is min-max normalised to [0, 1] (a heatmap). Taking |mean| (not the mean of |gradient|)
follows the paper's main figures. The noise is deterministic: copy s uses
``tf.random.stateless_normal(shape, seed=[seed, s], alg="philox") * sigma`` (see
``sample_noise``), the same for every image, so results do not depend on batching. The noisy
copies (of one or several images) are differentiated ``batch_size`` at a time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnvis_cli._tf import tf_and_keras
from cnnvis_cli.methods.base import Explanation, ProgressCallback, explanations_from
from cnnvis_cli.methods.saliency import SampledGradients, input_gradients, normalise_heatmaps
from cnnvis_cli.model import ModelAdapter


def sample_noise(seed: int, samples: Any, shape: Any) -> Any:
    """Standard normal noise (n, *shape) for sample indices (n,): row i uses seed [seed, s_i]."""
    tf, _ = tf_and_keras()
    seed_t = tf.constant(seed, tf.int64)

    def one(sample: Any) -> Any:
        key = tf.stack([seed_t, tf.cast(sample, tf.int64)])
        return tf.random.stateless_normal(shape, seed=key, alg="philox")

    return tf.map_fn(one, tf.convert_to_tensor(samples), fn_output_signature=tf.float32)


class SmoothGrad(SampledGradients):
    """SmoothGrad with ``samples`` noisy copies, noise std ``noise`` x 255, seeded by ``seed``."""

    name = "smoothgrad"
    batch_counts_images = False
    title = "SmoothGrad"

    def __init__(
        self,
        adapter: ModelAdapter,
        *,
        samples: int = 25,
        noise: float = 0.15,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(adapter, **kwargs)
        if int(samples) < 1:
            raise ValueError(f"--samples must be at least 1, got {samples}")
        if not math.isfinite(float(noise)) or float(noise) < 0:
            raise ValueError(f"--noise must be a finite number >= 0, got {noise}")
        self.samples = int(samples)
        self.noise = float(noise)
        self.seed = int(seed)
        self.sigma = 255.0 * self.noise
        self._compiled = self.compile(self._noisy_gradients)

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "samples": self.samples,
            "noise": self.noise,
            "sigma": self.sigma,
            "seed": self.seed,
        }

    def _noisy_gradients(self, images: Any, samples: Any, targets: Any) -> Any:
        """Gradients (n, K, h, w, c) at images + noise of samples (n,), for targets (n, K)."""
        tf, _ = tf_and_keras()
        noise = sample_noise(self.seed, samples, tf.shape(images)[1:]) * self.sigma
        gradients, _, _ = input_gradients(
            self.adapter, images + noise, lambda _: targets, self.top_k
        )
        return gradients

    def mean_gradients(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean noisy gradients (B, K, h, w, c) float64, targets (B, K), target outputs (B, K)."""
        images = np.asarray(images, dtype=np.float32)
        targets, outputs = self.predict_targets(images)
        sums = np.zeros((len(images), self.top_k, *images.shape[1:]), dtype=np.float64)
        for rows, real, done in self.chunks(len(images) * self.samples):
            owner, sample = rows // self.samples, rows % self.samples
            gradients = self._compiled(images[owner], sample.astype(np.int32), targets[owner])
            np.add.at(sums, owner[:real], gradients.numpy()[:real].astype(np.float64))
            if progress is not None:
                progress(done)
        return sums / self.samples, targets, outputs

    def _explain(self, images: np.ndarray, progress: ProgressCallback | None) -> list[Explanation]:
        mean, targets, outputs = self.mean_gradients(images, progress)
        maps = normalise_heatmaps(np.abs(mean).max(axis=-1))
        return explanations_from(maps, targets, outputs)

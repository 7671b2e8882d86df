"""SmoothGrad: saliency averaged over noisy copies of the image.

Smilkov, Thorat, Kim, Viégas & Wattenberg, "SmoothGrad: removing noise by adding noise",
ICML workshop 2017.

For the class score y^c (the logit) and raw pixels x (0..255, before preprocessing)::

    sigma    = noise * (x_max - x_min) = noise * 255           (noise level on the raw scale)
    eps_s    ~ N(0, sigma^2),  s = 0 .. n - 1
    G^c      = 1/n * sum_s d y^c / d x  at  x + eps_s
    M^c_ij   = max_ch | G^c_ij,ch |                            (absolute value of the mean)

The map is min-max normalized to [0, 1] (a heatmap). Taking |mean| (not the mean of |gradient|)
follows the paper's main figures. The noise is deterministic: copy s uses
``tf.random.stateless_normal(shape, seed=[seed, s], alg="philox") * sigma`` (see
``sample_noise``), the same for every image, so results do not depend on batching. The noisy
copies (of one or several images) are differentiated ``--eval-batch`` at a time.
VarGrad and SquareGrad (``vargrad.py``) share this sampler (:class:`NoisyGradients`): they
differ only in the statistic taken of the same noisy gradients.

Convention: ``--noise`` is relative to the raw 0..255 range (sigma = noise x 255 on raw
pixels, as in the paper's "noise level" sigma / (x_max - x_min)); Xplique's ``noise`` is an
absolute std in the model's input space (after preprocessing). For [0, 1] (``unit``)
preprocessing the two agree when Xplique's noise equals ours; for [-1, 1] it is twice ours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.base import Explanation, ProgressCallback, explanations_from
from cnnvis_cli.methods.copies import CopiesMethod
from cnnvis_cli.methods.gradients import logit_gradients
from cnnvis_cli.methods.normalize import minmax_range, normalize_minmax
from cnnvis_cli.options import Options, check_range, option


@dataclass(frozen=True)
class SmoothGradOptions(Options):
    samples: int = option(25, "Noisy copies per image.", metavar="N", min=1)
    noise: float = option(
        0.15, "Noise std as a fraction of the 0..255 input range (sigma = noise x 255).", min=0.0
    )
    seed: int = option(0, "Noise seed (results are reproducible).", metavar="N")

    def __post_init__(self) -> None:
        check_range("--samples", self.samples, 1)
        if not math.isfinite(float(self.noise)) or self.noise < 0:
            raise ValueError(f"--noise must be a finite number >= 0, got {self.noise}")


def sample_noise(seed: int, samples: Any, shape: Any) -> Any:
    """Standard normal noise (n, *shape) for sample indices (n,): row i uses seed [seed, s_i]."""
    tf, _ = tf_and_keras()
    seed_t = tf.constant(seed, tf.int64)

    def one(sample: Any) -> Any:
        key = tf.stack([seed_t, tf.cast(sample, tf.int64)])
        return tf.random.stateless_normal(shape, seed=key, alg="philox")

    return tf.map_fn(one, tf.convert_to_tensor(samples), fn_output_signature=tf.float32)


class NoisyGradients(CopiesMethod):
    """Base of SmoothGrad, VarGrad and SquareGrad: a statistic of the gradients of ``samples``
    noisy copies (noise std ``noise`` x 255, seeded by ``seed``), max over channels, normalized.
    """

    options_type = SmoothGradOptions
    pixel_level = True

    def __init__(self, adapter: Any, options: SmoothGradOptions | None = None, **kwargs: Any):
        super().__init__(adapter, options, **kwargs)
        self.sigma = 255.0 * self.options.noise
        self._compiled = self.compile(self._noisy_gradients)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "sigma": self.sigma}

    def _noisy_gradients(self, images: Any, samples: Any, targets: Any) -> Any:
        """Gradients (n, K, h, w, c) at images + noise of samples (n,), for targets (n, K)."""
        tf, _ = tf_and_keras()
        noise = sample_noise(self.options.seed, samples, tf.shape(images)[1:]) * self.sigma
        gradients, _, _ = logit_gradients(
            self.adapter, images + noise, lambda _: targets, self.top_k
        )
        return gradients

    def gradient_moments(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Mean and mean square of the noisy gradients (B, K, h, w, c) float64, and the chosen
        targets."""
        images = np.asarray(images, dtype=np.float32)
        chosen = self.predict_targets(images)
        targets = chosen["targets"]
        samples = self.options.samples
        sums = np.zeros((2, len(images), self.top_k, *images.shape[1:]), dtype=np.float64)
        for chunk in self.evaluation_chunks(len(images) * samples):
            owner, sample = chunk.index // samples, chunk.index % samples
            gradients = self._compiled(images[owner], sample.astype(np.int32), targets[owner])
            real = chunk.real
            gradients = gradients.numpy()[:real].astype(np.float64)
            np.add.at(sums[0], owner[:real], gradients)
            np.add.at(sums[1], owner[:real], gradients**2)
            if progress is not None:
                progress(chunk.done)
        return sums[0] / samples, sums[1] / samples, chosen

    def statistic(self, mean: np.ndarray, square_mean: np.ndarray) -> np.ndarray:
        """The non-negative per-channel statistic (B, K, h, w, c) of the noisy gradients."""
        raise NotImplementedError

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        if len(images) == 0:
            return []
        mean, square_mean, chosen = self.gradient_moments(images, progress)
        magnitude = self.statistic(mean, square_mean).max(axis=-1)
        scales = minmax_range(magnitude)
        maps = normalize_minmax(magnitude)
        return explanations_from({**chosen, "maps": maps, "scales": scales}, self.kind)


class SmoothGrad(NoisyGradients):
    """SmoothGrad with ``samples`` noisy copies, noise std ``noise`` x 255, seeded by ``seed``."""

    name = "smoothgrad"
    title = "SmoothGrad"

    def mean_gradients(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Mean noisy gradients (B, K, h, w, c) float64 and the chosen targets."""
        mean, _, chosen = self.gradient_moments(images, progress)
        return mean, chosen

    def statistic(self, mean: np.ndarray, square_mean: np.ndarray) -> np.ndarray:
        return np.abs(mean)

"""LIME over superpixels: a locally weighted linear surrogate of the model's output.

Ribeiro, Singh & Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any
Classifier", KDD 2016.

The M segments of the image (``--segments``, ``methods/segments.py``) are binary interpretable
features. ``--samples`` coalitions z_i in {0, 1}^M are drawn (z_0 = all ones: the image itself;
every other bit on with probability 1/2, as ``lime_image``), each scored by the model's output
for the target on the image whose removed segments are filled with the baseline (a probability
for softmax heads). Each sample is weighted by an exponential kernel on its cosine distance to
the image's all-ones vector::

    d_i  = 1 - cos(z_i, 1) = 1 - sqrt(|z_i| / M)           (1 for the empty coalition)
    pi_i = sqrt(exp(-d_i^2 / w^2))                          w = ``--kernel-width``

and the surrogate is ridge regression with an intercept, alpha = 1, weighted by pi (sklearn's
``Ridge(alpha=1)`` with ``sample_weight``, the ``lime`` package's default): the weighted means
are subtracted and (X^T P X + I) beta = X^T P y is solved in float64. The map paints each segment
with its coefficient beta_j, divided by max |beta| (signed, in [-1, 1]); the facts hold the
intercept and the weighted R^2 of the surrogate on its samples (``lime``'s ``score``):
``surrogate_intercept`` and ``surrogate_r2``.

Kernel width: 0.25, ``lime_image``'s default for the cosine distance (which lies in [0, 1]).
Half the segments kept (d = 0.29) then weighs 0.51 of the image itself, a quarter (d = 0.5)
0.13: the samples near the image dominate without the far ones vanishing. (``lime``'s tabular
default, 0.75 sqrt(M), is for Euclidean distances; Xplique's 45 makes every weight ~1.)

Sampling: sample i draws its M bits from ``tf.random.stateless_uniform`` keyed by (``--seed``, i),
inside the compiled function that builds and scores the coalition images ``--eval-batch`` at a
time: results do not depend on batching, and sample i does not depend on the sample count.
Differences from ``lime``: the removed segments get ``--baseline`` (default the image's mean
colour; ``lime_image``'s default ``hide_color=None`` fills each segment with its own mean
colour); no feature selection (``lime_image`` keeps all features by default too); segments from
SLIC (``lime_image`` uses quickshift).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.base import Facts
from cnnvis_cli.methods.perturbation import Report, baseline_image, parse_baseline
from cnnvis_cli.methods.segments import CoalitionMethod, SegmentOptions, segment_map
from cnnvis_cli.options import check_range, option

RIDGE_ALPHA = 1.0


@dataclass(frozen=True)
class LimeOptions(SegmentOptions):
    samples: int = option(1000, "Perturbed samples per image.", metavar="N", min=1)
    kernel_width: float = option(
        0.25, "Width of the exponential kernel on the cosine distance.", metavar="W"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("--samples", self.samples, 1)
        if not float(self.kernel_width) > 0:
            raise ValueError(f"--kernel-width must be positive, got {self.kernel_width}")
        object.__setattr__(self, "baseline", parse_baseline(self.baseline, "lime"))


@dataclass(frozen=True)
class SurrogateFacts(Facts):
    """Segments M, and per target the surrogate's intercept and weighted R^2 (named apart from
    the record's own ``score``, the target's output)."""

    segments: int
    surrogate_intercept: list[float]
    surrogate_r2: list[float]


def lime_coalitions(seed: int, samples: Any, features: Any) -> Any:
    """(n, M) float32 0/1 samples for sample indices (n,): index 0 is all ones, index i > 0
    draws its bits from ``stateless_uniform`` keyed by (seed, i)."""
    tf, _ = tf_and_keras()
    seed_t = tf.constant(seed, tf.int64)

    def one(sample: Any) -> Any:
        key = tf.stack([seed_t, tf.cast(sample, tf.int64)])
        bits = tf.cast(
            tf.random.stateless_uniform([features], seed=key, alg="philox") < 0.5, tf.float32
        )
        return tf.where(sample == 0, tf.ones_like(bits), bits)

    return tf.map_fn(one, tf.convert_to_tensor(samples), fn_output_signature=tf.float32)


def cosine_kernel(coalitions: np.ndarray, width: float) -> np.ndarray:
    """pi_i = sqrt(exp(-d_i^2 / w^2)) with d_i the cosine distance of z_i to all ones."""
    coalitions = np.asarray(coalitions, dtype=np.float64)
    kept = coalitions.sum(axis=1)
    distance = 1.0 - np.sqrt(kept / coalitions.shape[1])
    return np.sqrt(np.exp(-(distance**2) / width**2))


def weighted_ridge(
    features: np.ndarray, values: np.ndarray, weights: np.ndarray, alpha: float = RIDGE_ALPHA
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients (K, M), intercepts (K,) and weighted R^2 (K,) of ridge regression with an
    (unpenalized) intercept: ``features`` (n, M), ``values`` (n, K), ``weights`` (n,)."""
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    x_mean = w @ x / w.sum()
    y_mean = w @ y / w.sum()
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ (w[:, None] * xc) + alpha * np.eye(x.shape[1])
    beta = np.linalg.solve(gram, xc.T @ (w[:, None] * yc))  # (M, K)
    intercept = y_mean - x_mean @ beta
    residual = y - (x @ beta + intercept)
    total = w @ (yc**2)
    score = np.where(total > 0, 1.0 - w @ (residual**2) / np.where(total > 0, total, 1.0), 0.0)
    return beta.T, intercept, score


class Lime(CoalitionMethod):
    """LIME over SLIC superpixels or a grid (signed map: each segment's coefficient)."""

    name = "lime"
    title = "LIME"
    options_type = LimeOptions

    def __init__(self, adapter: Any, options: LimeOptions | None = None, **kwargs: Any):
        super().__init__(adapter, options, **kwargs)
        self._sampled = self.compile(self._sampled_fn)

    def _sampled_fn(
        self, image: Any, baseline: Any, labels: Any, samples: Any, targets: Any
    ) -> Any:
        """The coalitions (n, M) of sample indices (n,) and their target outputs (n, K)."""
        tf, _ = tf_and_keras()
        coalitions = lime_coalitions(self.options.seed, samples, tf.reduce_max(labels) + 1)
        return coalitions, self._coalition_fn(image, baseline, labels, coalitions, targets)

    def draw_samples(
        self, image: np.ndarray, labels: np.ndarray, targets: np.ndarray, report: Report = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The coalitions (N, M) and their target outputs (N, K) float64 for one raw image."""
        tf, _ = tf_and_keras()
        image = np.asarray(image, dtype=np.float32)
        image_t = tf.constant(image)
        baseline_t = tf.constant(baseline_image(image, self.options.baseline))
        labels_t = tf.constant(np.asarray(labels, dtype=np.int32))
        targets_t = tf.constant(np.asarray(targets, dtype=np.int32))
        total = self.options.samples
        m = int(labels.max()) + 1
        coalitions = np.empty((total, m), dtype=np.float64)
        outputs = np.empty((total, len(targets)), dtype=np.float64)
        for chunk in self.evaluation_chunks(total):
            drawn, scored = self._sampled(
                image_t, baseline_t, labels_t, tf.constant(chunk.index.astype(np.int32)), targets_t
            )
            real = chunk.index[: chunk.real]
            coalitions[real] = drawn.numpy()[: chunk.real]
            outputs[real] = scored.numpy()[: chunk.real]
            if report is not None:
                report(chunk.done)
        return coalitions, outputs

    def surrogate(
        self, image: np.ndarray, targets: np.ndarray, report: Report = None
    ) -> tuple[np.ndarray, np.ndarray, SurrogateFacts]:
        """Coefficients (K, M) of one raw image for targets (K,), its labels (h, w), facts."""
        labels = self.labels(image)
        coalitions, outputs = self.draw_samples(image, labels, targets, report)
        weights = cosine_kernel(coalitions, self.options.kernel_width)
        beta, intercept, score = weighted_ridge(coalitions, outputs, weights)
        facts = SurrogateFacts(
            int(labels.max()) + 1, [float(v) for v in intercept], [float(v) for v in score]
        )
        return beta, labels, facts

    def attribute(
        self, image: np.ndarray, targets: np.ndarray, outputs: np.ndarray, report: Report
    ) -> tuple[np.ndarray, Facts]:
        beta, labels, facts = self.surrogate(image, targets, report)
        return segment_map(beta, labels), facts

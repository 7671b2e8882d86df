"""Faithfulness of a saliency map: the deletion and insertion AUCs.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
BMVC 2018 (section 4.1, "Deletion and insertion metrics").

A faithful map ranks first the pixels the model actually relies on. Pixels are ranked by
decreasing saliency ``s`` (ties broken by the row-major pixel index: a *stable* argsort of
``-s``), so ``rank[i, j]`` in ``0 .. h w - 1`` is a pixel's position in that order. For a run of
``steps`` steps and ``n = h w`` pixels, step ``t = 0 .. steps`` changes the top

    k_t = round(t n / steps)     (rounded half up: floor(t n / steps + 1/2); k_0 = 0, k_steps = n)

pixels, i.e. those with ``rank < k_t`` (all channels of a pixel together)::

    M_t          = [rank < k_t]                               (h x w, 0/1)
    deletion:    D_t = I * (1 - M_t) + B_del * M_t,   B_del = 0 (black on the raw 0..255 scale)
    insertion:   N_t = B_ins * (1 - M_t) + I * M_t,   B_ins = blur(I)

where ``blur`` is OpenCV's ``GaussianBlur`` with sigma = max(h, w) / 20 in both directions (kernel
size derived from sigma by OpenCV, reflected borders ``BORDER_REFLECT_101``); the paper starts
insertion from a blurred canvas and deletes to black. The model's output ``f_c`` for the target
class (a probability for softmax / sigmoid heads) along the steps gives a curve of ``steps + 1``
points, integrated over the fraction of pixels changed, [0, 1], with the trapezoid rule::

    AUC = (1 / steps) * (sum_t f_c(X_t) - (f_c(X_0) + f_c(X_steps)) / 2)

A faithful map gives a *low* deletion AUC (the probability collapses as soon as the important
pixels go) and a *high* insertion AUC (it recovers as soon as they come back).

The step images are built inside one compiled function, ``batch_size`` steps at a time, from the
image, the start/end images and the rank map with the broadcast comparison ``rank < k`` — only one
chunk of step images exists at any time. Chunks come from ``core.batching.chunks`` (equal sizes,
the last padded by repeating its last ``k``), so the function is traced once per input shape.

Conventions against Xplique's ``Deletion`` / ``Insertion`` (``xplique/metrics/fidelity.py``),
which integrate with the same trapezoid rule over ``steps + 1`` points:

- baseline: Xplique replaces pixels with one ``baseline_mode`` value (0 by default) in
  model-input space for both metrics; cnnvis deletes to black *raw* pixels (0 before
  preprocessing) and inserts onto a blurred copy, as Petsiuk et al. do;
- step sizes: Xplique changes ``np.linspace(0, n, steps + 1, dtype=int32)`` pixels, i.e.
  floor(t n / steps); cnnvis rounds halves up (k_t above) — the counts differ by at most one;
- order: Xplique ranks by ``np.argsort(map)[::-1]`` (ties in an unspecified order) and averages a
  multi-channel map over its channels; cnnvis ranks the non-negative heat the pipeline derives
  from any map (|g| summed over channels for gradient maps) with ties by pixel index;
- score: Xplique integrates the model's raw output (logits unless ``activation="softmax"``);
  cnnvis the model's output, a probability for softmax and sigmoid heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.batching import chunk_size, chunks
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.core.tracing import Compiled
from cnnvis_cli.evaluation.metrics.base import MetricSettings, known_names, validate
from cnnvis_cli.methods.baselines import gaussian_blur

METRICS = ("deletion", "insertion")
DELETION_BASELINE = 0.0  # black, on the raw 0..255 scale
BLUR_SIGMA_FRACTION = 1 / 20  # insertion canvas: Gaussian blur with sigma = max(h, w) / 20

ProgressCallback = Callable[[float], None]


def rank_map(saliency: np.ndarray) -> np.ndarray:
    """(h, w) int32: each pixel's position when ranked by decreasing saliency.

    Ties are broken by the row-major pixel index (a stable argsort of ``-saliency``).
    """
    saliency = np.asarray(saliency, dtype=np.float64)
    order = np.argsort(-saliency.ravel(), kind="stable")
    ranks = np.empty(order.size, dtype=np.int32)
    ranks[order] = np.arange(order.size, dtype=np.int32)
    return ranks.reshape(saliency.shape)


def step_counts(pixels: int, steps: int) -> np.ndarray:
    """(steps + 1,) int64: k_t = floor(t * pixels / steps + 1/2), exactly in integers."""
    t = np.arange(steps + 1, dtype=np.int64)
    return (2 * t * pixels + steps) // (2 * steps)


def insertion_baseline(image: np.ndarray) -> np.ndarray:
    """The insertion canvas: ``cv2.GaussianBlur`` of the raw image, sigma = max(h, w) / 20."""
    return gaussian_blur(image, max(image.shape[0], image.shape[1]) * BLUR_SIGMA_FRACTION)


def deletion_baseline(image: np.ndarray) -> np.ndarray:
    """The deletion target: black (0 on the raw 0..255 scale), shaped like the image."""
    return np.full_like(np.asarray(image, dtype=np.float32), DELETION_BASELINE)


def trapezoid_auc(curve: Sequence[float] | np.ndarray) -> float:
    """Area under ``steps + 1`` equally spaced points on [0, 1] by the trapezoid rule."""
    values = np.asarray(curve, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"a curve needs at least 2 points, got shape {values.shape}")
    steps = values.size - 1
    return float((values.sum() - (values[0] + values[-1]) / 2) / steps)


class FaithfulnessMetrics:
    """Deletion / insertion AUCs of saliency maps for one model (Petsiuk et al., BMVC 2018).

    Args:
        adapter: the loaded model; it is run on raw 0..255 pixels (it applies preprocessing).
        metrics: which of ``"deletion"`` and ``"insertion"`` to compute.
        steps: number of steps; each curve has ``steps + 1`` points (at least 1).
        batch_size: step images per compiled call (at most ``steps + 1`` are used).
        return_curves: also return the curves, as lists of floats under ``"<metric>_curve"``.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        *,
        metrics: Sequence[str] = METRICS,
        steps: int = 32,
        batch_size: int = 16,
        return_curves: bool = False,
    ) -> None:
        names = known_names(metrics, METRICS)
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.adapter = adapter
        self.metrics: tuple[str, ...] = tuple(names)  # unique, in given order
        self.steps = int(steps)
        self.batch_size = int(batch_size)
        self.return_curves = bool(return_curves)
        self._step_outputs = Compiled(self._step_outputs_fn)

    @classmethod
    def from_settings(
        cls, adapter: ModelAdapter, settings: MetricSettings, names: Sequence[str]
    ) -> FaithfulnessMetrics:
        """The registry's constructor: ``names`` among deletion, insertion."""
        return cls(adapter, metrics=names, steps=settings.steps, batch_size=settings.batch_size)

    def trace_counts(self) -> dict[str, int]:
        """How many times the compiled step function was traced (once per input shape)."""
        return {"step_outputs": self._step_outputs.traces}

    def params(self) -> dict[str, Any]:
        """Settings worth recording in a run summary."""
        return {
            "metrics": list(self.metrics),
            "steps": self.steps,
            "batch_size": self.batch_size,
            "deletion_baseline": "black (0)",
            "insertion_baseline": "gaussian blur, sigma = max(h, w) / 20",
        }

    # -- compiled function ----------------------------------------------------------------------

    def _step_outputs_fn(self, start: Any, end: Any, ranks: Any, ks: Any, class_index: Any) -> Any:
        """Target outputs (n,) for n step images ``where(rank < k, end, start)``.

        ``start`` / ``end`` (h, w, c) float32, ``ranks`` (h, w) int32, ``ks`` (n,) int32,
        ``class_index`` an int32 scalar.
        """
        tf, _ = tf_and_keras()
        dynamic = tf.shape(start)  # static sizes when known, so the model sees full shapes
        height, width, channels = (
            dynamic[i] if start.shape[i] is None else int(start.shape[i]) for i in range(3)
        )
        # (row, column * channel) layout: the select needs no broadcast along a trailing c axis
        flat = [height, width * channels]
        ranks_flat = tf.reshape(tf.broadcast_to(ranks[:, :, None], [height, width, channels]), flat)
        mask = ranks_flat[None, :, :] < ks[:, None, None]  # (n, h, w c)
        images = tf.where(mask, tf.reshape(end, flat)[None], tf.reshape(start, flat)[None])
        images = tf.reshape(images, [-1, height, width, channels])
        return tf.gather(self.adapter.outputs(images), class_index, axis=1)

    # -- evaluation -----------------------------------------------------------------------------

    def _validate(
        self, image: np.ndarray, saliency: np.ndarray, class_index: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return validate(self.adapter, image, saliency, class_index)

    def _curve(
        self,
        start: Any,
        end: Any,
        ranks: Any,
        class_index: Any,
        ks: np.ndarray,
        report: Callable[[], None],
    ) -> np.ndarray:
        tf, _ = tf_and_keras()
        curve = np.empty(len(ks), dtype=np.float64)
        for chunk in chunks(len(ks), self.batch_size):
            steps = tf.constant(ks[chunk.index].astype(np.int32))
            result = self._step_outputs(start, end, ranks, steps, class_index).numpy()
            curve[chunk.index[: chunk.real]] = result[: chunk.real]
            report()
        return curve

    def evaluate(
        self,
        image: np.ndarray,
        saliency: np.ndarray,
        class_index: int,
        progress: ProgressCallback | None = None,
    ) -> dict[str, Any]:
        """Deletion / insertion AUCs of ``saliency`` for one image and class.

        Args:
            image: one raw model-input image, h x w x c float (0..255), at the model's input size.
            saliency: h x w importance map at the same resolution (higher = more important).
            class_index: the class whose output (probability for softmax heads) is tracked.
            progress: called with the fraction done (0..1] after each compiled chunk.

        Returns:
            ``{"deletion_auc": float, "insertion_auc": float}`` for the requested metrics, plus
            ``"deletion_curve"`` / ``"insertion_curve"`` (lists of ``steps + 1`` floats) when
            ``return_curves`` is set.
        """
        tf, _ = tf_and_keras()
        image, saliency = self._validate(image, saliency, class_index)
        height, width = image.shape[:2]
        ks = step_counts(height * width, self.steps)
        ranks = tf.constant(rank_map(saliency))
        target = tf.constant(int(class_index), tf.int32)
        image_t = tf.constant(image)
        chunks_per_metric = math.ceil(len(ks) / chunk_size(len(ks), self.batch_size))
        total_chunks = chunks_per_metric * len(self.metrics)
        done = 0

        def report() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done / total_chunks)

        result: dict[str, Any] = {}
        for metric in self.metrics:
            if metric == "deletion":
                start, end = image_t, tf.constant(deletion_baseline(image))
            else:
                start, end = tf.constant(insertion_baseline(image)), image_t
            curve = self._curve(start, end, ranks, target, ks, report)
            result[f"{metric}_auc"] = trapezoid_auc(curve)
            if self.return_curves:
                result[f"{metric}_curve"] = [float(v) for v in curve]
        return result

"""Integrated Gradients: path-integrated input gradients from a baseline to the image.

Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.

For the class score F = y^c (the logit), raw pixels x (0..255, before preprocessing) and a
baseline x', with m = ``steps`` and the trapezoid rule on alpha_k = k / m, k = 0 .. m::

    IG(x)  = (x - x') * sum_k w_k dF/dx (x' + alpha_k (x - x')),   w_0 = w_m = 1/(2m), else 1/m

Completeness: sum IG = F(x) - F(x') up to the quadrature error; each explanation's
``facts.completeness_gap`` holds |sum IG - (F(x) - F(x'))| / |F(x) - F(x')| per target
(None when F(x) = F(x')). The heatmap is sum over channels of |IG|, min-max normalized to
[0, 1]; the signed attributions are returned by ``attribute``.

Baselines (raw pixel space, before preprocessing): ``black`` (0, default), ``gray`` (127.5),
``blur`` (a Gaussian blur of the image, sigma = min(h, w) / 20, OpenCV ``GaussianBlur`` with
reflected borders), ``mean`` (the image's per-channel mean) or a number on the 0..255 scale.
The m + 1 path points of all images go through one compiled function ``--eval-batch`` at a time.

Conventions: ``--steps`` counts *intervals* (m intervals, m + 1 gradient evaluations, the
trapezoid rule); Xplique's ``steps`` counts points (a Riemann sum over ``steps`` points), so
Xplique's ``steps = m + 1`` evaluates the same points, weighted differently at the ends. The
baseline lives in raw pixel space: black = 0 before preprocessing (= -1 for [-1, 1]
preprocessing, = -mean for caffe), not a zero *model input*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.targets import gather_targets
from cnnvis_cli.methods import baselines
from cnnvis_cli.methods.base import Explanation, Facts, ProgressCallback, explanations_from
from cnnvis_cli.methods.copies import CopiesMethod
from cnnvis_cli.methods.gradients import logit_gradients
from cnnvis_cli.methods.normalize import minmax_range, normalize_minmax
from cnnvis_cli.options import Options, check_range, option

BASELINES = ("black", "gray", "blur", "mean")


def parse_baseline(baseline: str | float) -> str | float:
    """IG's --baseline: black, gray, blur, mean or a number on the 0..255 scale."""
    return baselines.parse_baseline(baseline, BASELINES, "integrated gradients")


@dataclass(frozen=True)
class IntegratedGradientsOptions(Options):
    steps: int = option(50, "Integration intervals (steps + 1 gradient evaluations).", min=1)
    baseline: str = option(
        "black",
        "Integration start: black | gray (127.5) | blur | mean | a value on the 0..255 scale.",
        metavar="BASELINE",
    )

    def __post_init__(self) -> None:
        check_range("--steps", self.steps, 1)
        object.__setattr__(self, "baseline", parse_baseline(self.baseline))


@dataclass(frozen=True)
class CompletenessFacts(Facts):
    """|sum IG - (F(x) - F(x'))| / |F(x) - F(x')| per target (None when F(x) = F(x'))."""

    completeness_gap: list[float | None]


def completeness_gaps(attributions: np.ndarray, delta: np.ndarray) -> list[list[float | None]]:
    """|sum phi - delta| / |delta| per image and target, for attributions phi (B, K, ...) and
    score differences delta (B, K) (None where delta = 0)."""
    sums = attributions.reshape(*delta.shape, -1).sum(axis=-1)
    return [
        [None if d == 0 else float(abs(s - d) / abs(d)) for s, d in zip(sb, db, strict=True)]
        for sb, db in zip(sums, delta, strict=True)
    ]


def baseline_image(image: np.ndarray, baseline: str | float) -> np.ndarray:
    """The (h, w, c) float32 baseline x' for one raw image (blur sigma = min(h, w) / 20)."""
    return baselines.baseline_image(image, baseline, blur_sigma=min(image.shape[:2]) / 20)


def trapezoid_weights(steps: int) -> np.ndarray:
    """(steps + 1,) weights of the trapezoid rule on [0, 1]: 1/(2m) at both ends, else 1/m."""
    weights = np.full(steps + 1, 1.0 / steps)
    weights[[0, -1]] = 0.5 / steps
    return weights


@dataclass
class Attribution:
    """Signed IG attributions and what completeness is checked against."""

    attributions: np.ndarray  # (B, K, h, w, c) float64
    chosen: dict[str, np.ndarray]  # targets (B, K), outputs (B, K), predicted (B,), ...
    input_scores: np.ndarray  # (B, K) F(x), logits
    baseline_scores: np.ndarray  # (B, K) F(x'), logits
    baselines: np.ndarray  # (B, h, w, c) float32

    @property
    def targets(self) -> np.ndarray:
        return self.chosen["targets"]

    def completeness_gaps(self) -> list[list[float | None]]:
        """|sum IG - (F(x) - F(x'))| / |F(x) - F(x')| per image and target."""
        return completeness_gaps(self.attributions, self.input_scores - self.baseline_scores)


class IntegratedGradients(CopiesMethod):
    """Integrated Gradients with ``steps`` trapezoid intervals from ``baseline``."""

    name = "integrated-gradients"
    title = "Integrated Gradients"
    options_type = IntegratedGradientsOptions
    pixel_level = True

    def __init__(
        self, adapter: Any, options: IntegratedGradientsOptions | None = None, **kwargs: Any
    ):
        super().__init__(adapter, options, **kwargs)
        self._compiled = self.compile(self._path_gradients)

    def _path_gradients(self, inputs: Any, targets: Any) -> tuple[Any, Any]:
        """Gradients (n, K, h, w, c) and target logits (n, K) at path points (n, h, w, c)."""
        gradients, _, forward = logit_gradients(self.adapter, inputs, lambda _: targets, self.top_k)
        return gradients, gather_targets(forward.logits, targets)

    def attribute(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> Attribution:
        """Signed attributions of raw images (B, h, w, c) for their targets."""
        images = np.asarray(images, dtype=np.float32)
        chosen = self.predict_targets(images)
        targets = chosen["targets"]
        steps = self.options.steps
        bases = np.stack([baseline_image(image, self.options.baseline) for image in images])
        points = steps + 1
        weights = trapezoid_weights(steps)
        sums = np.zeros((len(images), self.top_k, *images.shape[1:]), dtype=np.float64)
        ends = np.zeros((len(images), 2, self.top_k), dtype=np.float64)  # F(x'), F(x)
        for chunk in self.evaluation_chunks(len(images) * points):
            owner, step = chunk.index // points, chunk.index % points
            alpha = (step / steps).astype(np.float64)[:, None, None, None]
            inputs = (1.0 - alpha) * bases[owner] + alpha * images[owner]
            gradients, logits = self._compiled(inputs.astype(np.float32), targets[owner])
            owner, step = owner[: chunk.real], step[: chunk.real]
            weighted = gradients.numpy()[: chunk.real] * weights[step][:, None, None, None, None]
            np.add.at(sums, owner, weighted)
            logits = logits.numpy()[: chunk.real]
            for end, at in ((0, 0), (1, steps)):
                ends[owner[step == at], end] = logits[step == at]
            if progress is not None:
                progress(chunk.done)
        difference = (images - bases).astype(np.float64)[:, None]
        return Attribution(
            attributions=difference * sums,
            chosen=chosen,
            input_scores=ends[:, 1],
            baseline_scores=ends[:, 0],
            baselines=bases,
        )

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        if len(images) == 0:
            return []
        result = self.attribute(images, progress)
        magnitude = np.abs(result.attributions).sum(axis=-1)
        scales = minmax_range(magnitude)
        maps = normalize_minmax(magnitude)
        facts = [CompletenessFacts(gaps) for gaps in result.completeness_gaps()]
        chosen = {**result.chosen, "maps": maps, "scales": scales}
        return explanations_from(chosen, self.kind, facts=facts)

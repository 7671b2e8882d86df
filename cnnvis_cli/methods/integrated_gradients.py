"""Integrated Gradients: path-integrated input gradients from a baseline to the image.

Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017.

For the class score F = y^c (the logit), raw pixels x (0..255, before preprocessing) and a
baseline x', with m = ``steps`` and the trapezoid rule on alpha_k = k / m, k = 0 .. m::

    IG(x)  = (x - x') * sum_k w_k dF/dx (x' + alpha_k (x - x')),   w_0 = w_m = 1/(2m), else 1/m

Completeness: sum IG = F(x) - F(x') up to the quadrature error; each explanation's
``extras["completeness_gap"]`` holds |sum IG - (F(x) - F(x'))| / |F(x) - F(x')| per target
(None when F(x) = F(x')). The heatmap is sum over channels of |IG|, min-max normalised to
[0, 1]; the signed attributions are returned by ``attribute``.

Baselines (raw pixel space, before preprocessing): ``black`` (0, default), ``gray`` (127.5),
``blur`` (a Gaussian blur of the image, sigma = min(h, w) / 20, OpenCV ``GaussianBlur`` with
reflected borders), ``mean`` (the image's per-channel mean) or a number on the 0..255 scale.
The m + 1 path points of all images go through one compiled function ``batch_size`` at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.methods import baselines
from cnnvis_cli.methods.base import Explanation, ProgressCallback, gather_targets
from cnnvis_cli.methods.saliency import SampledGradients, input_gradients, normalise_heatmaps
from cnnvis_cli.model import ModelAdapter

BASELINES = ("black", "gray", "blur", "mean")


def parse_baseline(baseline: str | float) -> str | float:
    """IG's --baseline: black, gray, blur, mean or a number on the 0..255 scale."""
    return baselines.parse_baseline(baseline, BASELINES, "integrated gradients")


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
    targets: np.ndarray  # (B, K) int32
    outputs: np.ndarray  # (B, K) model outputs of the targets (probabilities for softmax heads)
    input_scores: np.ndarray  # (B, K) F(x), logits
    baseline_scores: np.ndarray  # (B, K) F(x'), logits
    baselines: np.ndarray  # (B, h, w, c) float32

    def completeness_gaps(self) -> list[list[float | None]]:
        """|sum IG - (F(x) - F(x'))| / |F(x) - F(x')| per image and target."""
        sums = self.attributions.reshape(*self.targets.shape, -1).sum(axis=-1)
        delta = self.input_scores - self.baseline_scores
        return [
            [None if d == 0 else float(abs(s - d) / abs(d)) for s, d in zip(sb, db, strict=True)]
            for sb, db in zip(sums, delta, strict=True)
        ]


class IntegratedGradients(SampledGradients):
    """Integrated Gradients with ``steps`` trapezoid intervals from ``baseline``."""

    name = "integrated-gradients"
    batch_counts_images = False
    title = "Integrated Gradients"

    def __init__(
        self,
        adapter: ModelAdapter,
        *,
        steps: int = 50,
        baseline: str | float = "black",
        **kwargs: Any,
    ) -> None:
        super().__init__(adapter, **kwargs)
        if int(steps) < 1:
            raise ValueError(f"--steps must be at least 1, got {steps}")
        self.steps = int(steps)
        self.baseline = parse_baseline(baseline)
        self._compiled = self.compile(self._path_gradients)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "steps": self.steps, "baseline": self.baseline}

    def _path_gradients(self, inputs: Any, targets: Any) -> tuple[Any, Any]:
        """Gradients (n, K, h, w, c) and target logits (n, K) at path points (n, h, w, c)."""
        gradients, _, forward = input_gradients(self.adapter, inputs, lambda _: targets, self.top_k)
        return gradients, gather_targets(forward.scores, targets)

    def attribute(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> Attribution:
        """Signed attributions of raw images (B, h, w, c) for their targets."""
        images = np.asarray(images, dtype=np.float32)
        targets, outputs = self.predict_targets(images)
        baselines = np.stack([baseline_image(image, self.baseline) for image in images])
        points = self.steps + 1
        weights = trapezoid_weights(self.steps)
        sums = np.zeros((len(images), self.top_k, *images.shape[1:]), dtype=np.float64)
        ends = np.zeros((len(images), 2, self.top_k), dtype=np.float64)  # F(x'), F(x)
        for rows, real, done in self.chunks(len(images) * points):
            owner, step = rows // points, rows % points
            alpha = (step / self.steps).astype(np.float64)[:, None, None, None]
            inputs = (1.0 - alpha) * baselines[owner] + alpha * images[owner]
            gradients, logits = self._compiled(inputs.astype(np.float32), targets[owner])
            owner, step = owner[:real], step[:real]
            weighted = gradients.numpy()[:real] * weights[step][:, None, None, None, None]
            np.add.at(sums, owner, weighted)
            logits = logits.numpy()[:real]
            for end, at in ((0, 0), (1, self.steps)):
                ends[owner[step == at], end] = logits[step == at]
            if progress is not None:
                progress(done)
        difference = (images - baselines).astype(np.float64)[:, None]
        return Attribution(
            attributions=difference * sums,
            targets=targets,
            outputs=outputs,
            input_scores=ends[:, 1],
            baseline_scores=ends[:, 0],
            baselines=baselines,
        )

    def _explain(self, images: np.ndarray, progress: ProgressCallback | None) -> list[Explanation]:
        result = self.attribute(images, progress)
        maps = normalise_heatmaps(np.abs(result.attributions).sum(axis=-1))
        gaps = result.completeness_gaps()
        return [
            Explanation(
                class_indices=[int(c) for c in result.targets[b]],
                scores=[float(s) for s in result.outputs[b]],
                maps=list(maps[b]),
                extras={"completeness_gap": gaps[b]},
            )
            for b in range(len(images))
        ]

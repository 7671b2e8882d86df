"""GradientSHAP (expected gradients): input gradients averaged over random baselines and points.

Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017 (SHAP's
``GradientExplainer``); Erion, Janizek, Sturmfels, Lundberg & Lee, "Improving performance of deep
learning models with axiomatic attribution priors and expected gradients", Nature Machine
Intelligence 2021 (expected gradients). Captum's ``GradientShap`` is the reference.

For the class score F = y^c (the logit), raw pixels x (0..255, before preprocessing) and
n = ``--samples`` draws s = 0 .. n - 1 of a baseline b_s from the baseline distribution, a point
alpha_s ~ U(0, 1) and Gaussian noise eps_s ~ N(0, sigma^2), sigma = noise x 255::

    x_s     = x + eps_s                                   (Captum's ``stdevs``, on the input)
    phi     = 1/n sum_s (x_s - b_s) * dF/dx ( b_s + alpha_s (x_s - b_s) )
    M_ij    = sum_ch | phi_ij,ch |                        min-max normalized to [0, 1]

As in Captum (``NoiseTunnel`` + ``InputBaselineXGradient``) and SHAP, the noise is added to the
*input*, so it enters both the sampled point and the difference x_s - b_s. Completeness holds in
expectation: sum phi ~ 1/n sum_s (F(x_s) - F(b_s)); each explanation's
``facts.completeness_gap`` holds |sum phi - mean_s (F(x_s) - F(b_s))| / |mean_s (F(x_s) - F(b_s))|
per target (Captum's convergence delta, per sample, is the unnormalised analogue). It shrinks
with ``--samples`` (and is 0 up to rounding for a model linear in its input).

Baseline distribution (``--baseline``, on the raw 0..255 scale; comma-separated items are mixed
with equal probability): ``black`` (0), ``gray`` (127.5), ``mean`` (the image's per-channel
mean), ``blur`` (Gaussian blur, sigma = min(h, w) / 20, as Integrated Gradients'), ``uniform`` (a
fresh image of U(0, 255) pixels per sample), a number, or a folder of images (each one a
baseline, resized to the image's size as the inputs are: area when shrinking, bilinear when
growing). Default ``uniform``. A single fixed baseline makes GradientSHAP a Monte Carlo estimate
of Integrated Gradients from it.

Randomness is seeded (``--seed``) and independent of batching: draw s uses the noise
``smoothgrad.sample_noise`` (stateless, keyed by (seed, s)) like SmoothGrad, and alpha_s, the
baseline's item and the uniform image of draw s come from NumPy generators keyed by
(seed, s) — the same for every image. The n draws of all images go through one compiled
function ``--eval-batch`` at a time; each call also evaluates F at x_s and b_s (two forward
passes without gradients per draw) for the completeness gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnvis_cli.core.decode import decode_image, to_model_tensor
from cnnvis_cli.core.discover import is_image_name
from cnnvis_cli.core.targets import gather_targets
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods import baselines
from cnnvis_cli.methods.base import Explanation, ProgressCallback, explanations_from
from cnnvis_cli.methods.copies import CopiesMethod
from cnnvis_cli.methods.gradients import logit_gradients
from cnnvis_cli.methods.integrated_gradients import (
    CompletenessFacts,
    baseline_image,
    completeness_gaps,
)
from cnnvis_cli.methods.normalize import minmax_range, normalize_minmax
from cnnvis_cli.methods.smoothgrad import sample_noise
from cnnvis_cli.options import Options, check_range, option

NAMED = ("black", "gray", "blur", "mean", "uniform")
UNIFORM_STREAM = 1  # NumPy key (seed, s, stream) of draw s's uniform baseline
CHOICE_STREAM = 2  # ... of draw s's alpha and baseline item


def parse_distribution(spec: str) -> tuple[str | float, ...]:
    """``--baseline`` items: names, numbers on the 0..255 scale, or folders of images."""
    items: list[str | float] = []
    for text in str(spec).split(","):
        text = text.strip()
        if not text:
            continue
        if text.lower() in NAMED:
            items.append(text.lower())
        elif Path(text).expanduser().is_dir():
            items.append(str(Path(text).expanduser()))
        else:
            items.append(baselines.parse_baseline(text, NAMED, "gradient-shap (or a folder)"))
    if not items:
        raise ValueError(
            "--baseline is empty; give black, gray, blur, mean, uniform, a number "
            "or a folder of images"
        )
    return tuple(items)


@dataclass(frozen=True)
class GradientShapOptions(Options):
    samples: int = option(50, "Draws (baseline, point, noise) per image.", metavar="N", min=1)
    noise: float = option(
        0.0,
        "Std of Gaussian noise added to the input per draw, as a fraction of the 0..255 range "
        "(Captum's stdevs / 255).",
        min=0.0,
    )
    seed: int = option(0, "Seed of the draws (results are reproducible).", metavar="N")
    baseline: str = option(
        "uniform",
        "Baseline distribution, comma-separated items drawn with equal probability: black | "
        "gray | blur | mean | uniform (random pixels) | a value on the 0..255 scale | a folder "
        "of images.",
        metavar="BASELINE[,...]",
    )

    def __post_init__(self) -> None:
        check_range("--samples", self.samples, 1)
        if not math.isfinite(float(self.noise)) or self.noise < 0:
            raise ValueError(f"--noise must be a finite number >= 0, got {self.noise}")
        parse_distribution(self.baseline)


def folder_images(folder: str) -> list[np.ndarray]:
    """The decoded RGB images of a baseline folder, in name order."""
    paths = sorted(p for p in Path(folder).iterdir() if p.is_file() and is_image_name(p))
    if not paths:
        raise ValueError(f"--baseline folder {folder} holds no images")
    return [decode_image(p) for p in paths]


def draws(seed: int, samples: int, items: int) -> tuple[np.ndarray, np.ndarray]:
    """alpha_s ~ U(0, 1) and the baseline item of each draw s (the same for every image)."""
    alphas = np.empty(samples)
    choices = np.empty(samples, dtype=np.int64)
    for s in range(samples):
        rng = np.random.default_rng([seed, s, CHOICE_STREAM])
        alphas[s], choices[s] = rng.uniform(), rng.integers(items)
    return alphas, choices


def uniform_image(seed: int, sample: int, shape: tuple[int, ...]) -> np.ndarray:
    """Draw ``sample``'s uniform baseline: U(0, 255) pixels, float32."""
    rng = np.random.default_rng([seed, sample, UNIFORM_STREAM])
    return rng.uniform(0.0, 255.0, shape).astype(np.float32)


class GradientShap(CopiesMethod):
    """GradientSHAP / expected gradients over ``samples`` draws from ``baseline``."""

    name = "gradient-shap"
    title = "GradientSHAP"
    options_type = GradientShapOptions
    pixel_level = True

    def __init__(self, adapter: Any, options: GradientShapOptions | None = None, **kwargs: Any):
        super().__init__(adapter, options, **kwargs)
        self.sigma = 255.0 * self.options.noise
        self.items = parse_distribution(self.options.baseline)
        self._folders: dict[str, list[np.ndarray]] = {}
        self._compiled = self.compile(self._draw_fn)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "sigma": self.sigma, "baseline": list(self.items)}

    def _draw_fn(
        self, images: Any, bases: Any, alphas: Any, samples: Any, targets: Any
    ) -> tuple[Any, Any]:
        """Attributions (n, K, h, w, c) of n draws and F(x_s) - F(b_s) (n, K)."""
        tf, _ = tf_and_keras()
        noise = sample_noise(self.options.seed, samples, tf.shape(images)[1:]) * self.sigma
        noisy = images + noise
        points = bases + alphas[:, None, None, None] * (noisy - bases)
        gradients, _, _ = logit_gradients(self.adapter, points, lambda _: targets, self.top_k)
        ends = self.adapter.forward(tf.concat([noisy, bases], axis=0)).logits
        ends = gather_targets(ends, tf.concat([targets, targets], axis=0))
        count = tf.shape(images)[0]
        return (noisy - bases)[:, None] * gradients, ends[:count] - ends[count:]

    def _item_images(self, images: np.ndarray) -> list[np.ndarray]:
        """(B, h, w, c) baselines of each fixed item (None for ``uniform``) for the images."""
        shape = images.shape[1:3]
        channels = images.shape[3]
        expanded: list[np.ndarray | None] = []
        for item in self.items:
            if item == "uniform":
                expanded.append(None)
            elif isinstance(item, str) and item not in NAMED:
                if item not in self._folders:
                    self._folders[item] = folder_images(item)
                for rgb in self._folders[item]:
                    tensor = to_model_tensor(rgb, tuple(shape), channels)
                    expanded.append(np.broadcast_to(tensor, images.shape))
            else:
                expanded.append(np.stack([baseline_image(image, item) for image in images]))
        return expanded

    def attribute(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Mean attributions phi (B, K, h, w, c) float64, mean_s F(x_s) - F(b_s) (B, K) and
        the chosen targets."""
        images = np.asarray(images, dtype=np.float32)
        chosen = self.predict_targets(images)
        targets = chosen["targets"]
        samples = self.options.samples
        expanded = self._item_images(images)
        alphas, choices = draws(self.options.seed, samples, len(expanded))
        sums = np.zeros((len(images), self.top_k, *images.shape[1:]), dtype=np.float64)
        deltas = np.zeros((len(images), self.top_k), dtype=np.float64)
        for chunk in self.evaluation_chunks(len(images) * samples):
            owner, sample = chunk.index // samples, chunk.index % samples
            bases = np.stack(
                [
                    uniform_image(self.options.seed, s, images.shape[1:])
                    if expanded[choices[s]] is None
                    else expanded[choices[s]][b]
                    for b, s in zip(owner, sample, strict=True)
                ]
            ).astype(np.float32)
            attributions, delta = self._compiled(
                images[owner],
                bases,
                alphas[sample].astype(np.float32),
                sample.astype(np.int32),
                targets[owner],
            )
            real = chunk.real
            np.add.at(sums, owner[:real], attributions.numpy()[:real].astype(np.float64))
            np.add.at(deltas, owner[:real], delta.numpy()[:real].astype(np.float64))
            if progress is not None:
                progress(chunk.done)
        return sums / samples, deltas / samples, chosen

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        if len(images) == 0:
            return []
        phi, delta, chosen = self.attribute(images, progress)
        facts = [CompletenessFacts(gaps) for gaps in completeness_gaps(phi, delta)]
        magnitude = np.abs(phi).sum(axis=-1)
        result = {**chosen, "maps": normalize_minmax(magnitude), "scales": minmax_range(magnitude)}
        return explanations_from(result, self.kind, facts=facts)

"""The base of the model-agnostic perturbation methods (RISE, KernelSHAP, LIME, Sobol).

They run forward passes only (so they also explain SavedModel directories), score the model's
*output* for each target (a probability for softmax heads, as the papers do) on many perturbed
copies of one image, and turn the scores into a map. This base holds what they share:

- the targets of each image from one forward pass of the originals (``CopiesMethod``);
- one image at a time, the perturbed copies built inside each method's compiled function,
  ``batching.evaluations`` copies per call (``core.batching.chunks``: equal chunks, the last
  padded, so the function is traced once per input shape); progress reported per chunk;
- the fill value of perturbed pixels (``--baseline``), on the raw 0..255 scale before the
  model's preprocessing, from ``methods/baselines.py``: ``mean`` (the image's per-channel
  mean), ``zero`` (black), ``gray`` (127.5), ``blur`` (a Gaussian blur of the image with
  sigma = min(h, w) / 20, the same as Integrated Gradients') or a number.

A subclass implements :meth:`PerturbationMethod.attribute` (raw per-target maps of one image and
its facts) and :meth:`PerturbationMethod.normalize` (the displayed map).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods import baselines
from cnnvis_cli.methods.base import Explanation, Facts, ProgressCallback, explanations_from
from cnnvis_cli.methods.copies import CopiesMethod

BASELINES = ("mean", "zero", "gray", "blur")

Report = Any  # Callable[[float], None]: the fraction of the current image that is done


def parse_baseline(baseline: str | float, what: str) -> str | float:
    """``--baseline`` of a perturbation method: mean, zero, gray, blur or a 0..255 number."""
    return baselines.parse_baseline(baseline, BASELINES, what)


def baseline_image(image: np.ndarray, baseline: str | float) -> np.ndarray:
    """The (h, w, c) float32 fill of one raw image (blur sigma = min(h, w) / 20)."""
    return baselines.baseline_image(image, baseline, blur_sigma=min(image.shape[:2]) / 20)


class PerturbationMethod(CopiesMethod):
    """Base: per-image raw attributions from batched forward passes of perturbed copies."""

    needs_gradients = False

    def target_outputs(self, perturbed: Any, targets: Any) -> Any:
        """(n, K) outputs of the targets (K,) for n raw perturbed images (in a compiled fn)."""
        tf, _ = tf_and_keras()
        return tf.gather(self.adapter.outputs(perturbed), targets, axis=1)

    def attribute(
        self, image: np.ndarray, targets: np.ndarray, outputs: np.ndarray, report: Report
    ) -> tuple[np.ndarray, Facts | None]:
        """Raw maps (K, h', w') of one raw image for its targets (K,) with outputs (K,)."""
        raise NotImplementedError

    def normalize(self, maps: np.ndarray) -> np.ndarray:
        """The displayed (K, h', w') maps from the raw ones."""
        raise NotImplementedError

    def scales(self, maps: np.ndarray) -> np.ndarray | None:
        """Per target, what :meth:`normalize` divided the raw maps (K, h', w') by (see
        ``Explanation.scales``); None: not comparable across targets."""
        return None

    def attributions(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> tuple[list[np.ndarray], dict[str, np.ndarray], list[Facts | None]]:
        """Raw maps (K, h', w') per image, the chosen targets and each image's facts."""
        images = np.asarray(images, dtype=np.float32)
        count = len(images)
        chosen = self.predict_targets(images)
        maps: list[np.ndarray] = []
        facts: list[Facts | None] = []
        for b in range(count):

            def report(fraction: float, b: int = b) -> None:
                if progress is not None:
                    progress((b + fraction) / count)

            raw, fact = self.attribute(
                images[b], chosen["targets"][b], chosen["outputs"][b], report
            )
            maps.append(raw)
            facts.append(fact)
        return maps, chosen, facts

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        if len(images) == 0:
            return []
        maps, chosen, facts = self.attributions(images, progress)
        shown = [self.normalize(m).astype(np.float32) for m in maps]
        result = {**chosen, "maps": shown}
        scales = [self.scales(m) for m in maps]
        if all(s is not None for s in scales):
            result["scales"] = scales
        has_facts = any(f is not None for f in facts)
        return explanations_from(result, self.kind, facts=facts if has_facts else None)

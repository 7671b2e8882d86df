"""Should I trust this map? Adebayo et al.'s model parameter randomisation test.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity Checks for Saliency Maps", NeurIPS
2018: a map that explains what the model learned must change when the learned weights are
destroyed. Guided back-propagation and guided Grad-CAM barely change — they behave like edge
detectors — while Grad-CAM and the plain gradient do.

Protocol (``evaluation/randomization.py`` has the groups and the re-initialisation):

1. each method explains every image on the trained model (a clone of it);
2. **cascading** (the paper's Fig. 2): step k re-initialises the k top groups (the head first,
   then down to the input), or, **independent**, the k-th group alone; ``--steps N`` keeps N of
   the cascade's depths, spread evenly and always including the head alone (step 1, the verdict's)
   and the whole network (the last);
3. after each step every method explains the images again and each map is compared with the
   trained model's by the four measures of ``evaluation/similarity.py``, at the model input's
   resolution (CAM maps upsampled as the overlays are, ``--upsample``).

Which class is explained: the paper's code explains each (randomised) model's own top class;
so does cnnvis, unless ``--class`` fixes one.

**Verdict**: a method *passes* when its mean Spearman rank correlation of |map| (over the images)
after re-initialising the head alone is below ``--max-similarity``: its map depends on what the
model learned. The default, 0.5, sits between the two behaviours the paper reports: after the
logits are re-initialised Grad-CAM's and the gradient's maps lose most of their rank order, guided
back-propagation's keep it (Adebayo et al., Fig. 2 and 4; Sixt et al., ICML 2020, prove guided
back-propagation's map is independent of the last layers' weights). On the bundled demo model
the README gives the measured figures.

Everything runs batched: a step's maps come from the methods' compiled functions built once on
the clone (its weights are assigned in place, so no retracing), ``batching.images`` images at a
time, and images stream through ``core.source.ImageSource`` — only one batch's maps exist at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.batching import Batching, pad_rows
from cnnvis_cli.core.targets import Targets, top1
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.core.tracing import Compiled
from cnnvis_cli.evaluation.randomization import Group, Randomizer, clone_adapter, layer_groups
from cnnvis_cli.evaluation.similarity import MEASURES, normalize_absolute, similarities
from cnnvis_cli.methods.base import Explanation, Method
from cnnvis_cli.methods.compare import check_method_names, split_methods
from cnnvis_cli.options import Options, option
from cnnvis_cli.output.render import resize_map

DEFAULT_METHODS = "gradcam,saliency,guided"
DEFAULT_MAX_SIMILARITY = 0.5
VERDICT_MEASURE = "spearman_abs"

GATE_PANEL = "Gate"

ProgressCallback = Callable[[float], None]


@dataclass(frozen=True)
class SanityOptions:
    """``cnnvis sanity``'s own options."""

    methods: str = option(
        DEFAULT_METHODS,
        "Comma-separated methods to test. Every method's options are accepted too, except "
        "--steps and --seed, which are sanity's own (Integrated Gradients and SmoothGrad then "
        "use their defaults).",
        metavar="METHOD,METHOD,...",
    )
    steps: int | None = option(
        None,
        "Randomisation steps to run: this many depths spread evenly from the head alone to "
        "the whole network. Default: one per layer group.",
        metavar="N",
        min=1,
    )
    independent: bool = option(
        False,
        "Re-initialise one layer group at a time, the others trained (default: cascading, "
        "from the head down).",
    )
    seed: int = option(0, "Seed of the re-initialised weights.", metavar="N")
    max_similarity: float = option(
        DEFAULT_MAX_SIMILARITY,
        "A method passes when its mean Spearman correlation of |map| with the trained model's, "
        "after re-initialising the head, is below this.",
        metavar="S",
        min=-1.0,
        max=1.0,
        panel=GATE_PANEL,
    )
    junit: Path | None = option(
        None, "Write JUnit XML (one test case per method).", metavar="FILE", panel=GATE_PANEL
    )

    def __post_init__(self) -> None:
        check_method_names(self.names, "sanity")

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(split_methods(self.methods)))


@dataclass(frozen=True)
class Step:
    """One column of the cascade: which groups are random after it."""

    index: int  # 1.. (0 is the trained model)
    label: str  # the deepest group re-initialised (cascading) or the one (independent)
    groups: tuple[int, ...]  # indices into the top-down group list

    def to_json(self, groups: list[Group]) -> dict[str, Any]:
        return {
            "index": self.index,
            "label": self.label,
            "randomized": [groups[i].name for i in self.groups],
            "layers": [path for i in self.groups for path in groups[i].paths],
        }


def plan_steps(groups: list[Group], steps: int | None, independent: bool) -> list[Step]:
    """The steps to run: ``steps`` depths (all when None) evenly spread over the groups, always
    including the head alone and (cascading) the whole network."""
    total = len(groups)
    if total == 0:
        return []
    count = total if steps is None else max(1, min(int(steps), total))
    if count == 1:
        depths = [1]
    else:
        depths = sorted({1 + round(i * (total - 1) / (count - 1)) for i in range(count)})
    plan = []
    for number, depth in enumerate(depths, start=1):
        chosen = (depth - 1,) if independent else tuple(range(depth))
        plan.append(Step(number, groups[depth - 1].name, chosen))
    return plan


@dataclass(frozen=True)
class GivenTargets(Targets):
    """One class per image, read from a variable assigned before each batch.

    Every method selects its targets with ``Targets.select`` on the (padded) batch's outputs, in
    image order, inside its compiled function; reading a variable there keeps the function traced
    once while the classes change from batch to batch.
    """

    classes: Any = field(default=None, compare=False)  # tf.Variable (batch rows,) int32

    def select(self, outputs: Any) -> Any:
        tf, _ = tf_and_keras()
        rows = tf.shape(outputs)[0]
        return tf.reshape(self.classes[:rows], [-1, 1])


@dataclass
class ImageSanity:
    """One image's result: the trained model's target and, per method, a value per step."""

    class_index: int
    score: float
    predicted: tuple[int, float]
    # method -> measure -> one value per step (steps 1..n)
    similarity: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # method -> the |map| normalisation (h x w in [0, 1]) of the trained model and each step
    maps: dict[str, list[np.ndarray]] = field(default_factory=dict)
    error: str | None = None


class SanityTest:
    """The randomisation test of several methods on one model (see the module docstring).

    Args:
        adapter: the loaded model (never modified: a clone is randomised).
        methods: method name -> its options (None: the method's defaults).
        steps: how many cascade depths to run (None: every group).
        independent: re-initialise one group at a time instead of cascading.
        seed: seeds every re-initialised variable.
        class_index: explain this class on every model; None: each model's own top class.
        batching: images per step and evaluations per call, as for the methods.
        upsample: how maps below the input's resolution are resized before comparing.
        reload: loads a second copy of the model when it cannot be cloned.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        methods: dict[str, Options | None],
        *,
        steps: int | None = None,
        independent: bool = False,
        seed: int = 0,
        class_index: int | None = None,
        batching: Batching | None = None,
        upsample: str = "bilinear",
        reload: Callable[[], ModelAdapter] | None = None,
    ) -> None:
        from cnnvis_cli.methods import get_method

        if not methods:
            raise ValueError("no method to test")
        self.adapter = adapter
        self.clone = clone_adapter(adapter, reload)
        self.groups = layer_groups(self.clone)
        if not self.groups:
            raise ValueError(f"{adapter.source}: the model has no weights to randomise")
        self.independent = bool(independent)
        self.plan = plan_steps(self.groups, steps, self.independent)
        needed = {i for step in self.plan for i in step.groups}
        self.randomizer = Randomizer(self.groups, seed, needed)
        self.seed = int(seed)
        self.upsample = upsample
        batching = batching or Batching()
        if self.clone.input_size is None:  # each image at its own size: one at a time
            batching = Batching(1, batching.evaluations)
        self.batching = batching
        self.class_index = class_index
        tf, _ = tf_and_keras()
        self._classes = tf.Variable(tf.zeros([batching.images], tf.int32), trainable=False)
        self._predict = Compiled(self._predict_fn)
        targets = (
            Targets(class_index, 1)
            if class_index is not None
            else GivenTargets(classes=self._classes)
        )
        self.methods: dict[str, Method] = {}
        for name, options in methods.items():
            cls = get_method(name)
            self.methods[name] = cls(self.clone, options, targets=targets, batching=self.batching)

    @property
    def test(self) -> str:
        return "independent" if self.independent else "cascading"

    def params(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "methods": list(self.methods),
            "steps": len(self.plan),
            "groups": len(self.groups),
            "seed": self.seed,
            "upsample": self.upsample,
            "class_index": self.class_index,
            "explained": "the class given with --class"
            if self.class_index is not None
            else "the trained model's top class, on every randomised model",
            **{name: method.params() for name, method in self.methods.items()},
        }

    def notes(self) -> list[str]:
        notes = list(dict.fromkeys(n for m in self.methods.values() for n in m.notes()))
        if self.randomizer.fallbacks:
            notes.append(
                "no initializer found for "
                f"{', '.join(self.randomizer.fallbacks[:5])}: Glorot-uniform (or zeros) used"
            )
        if self.randomizer.skipped:
            notes.append(f"integer variables left as trained: {', '.join(self.randomizer.skipped)}")
        return notes

    def _predict_fn(self, raw: Any) -> Any:
        return top1(self.clone.outputs(raw))

    def _trained_classes(self, images: np.ndarray) -> np.ndarray:
        """The trained model's top class per image (padded to the batch rows)."""
        padded = images
        if self.clone.input_size is not None:
            padded = pad_rows(images, self.batching.images)
        classes, _ = self._predict(padded)
        return np.asarray(classes, dtype=np.int32)

    def _at_input(self, explanation: Explanation, size: tuple[int, int]) -> np.ndarray:
        return resize_map(explanation.maps[0], size[0], size[1], self.upsample)

    def run(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[ImageSanity]:
        """The test on one batch of raw model-sized images (N x h x w x c, N <= batch size)."""
        images = np.asarray(images, dtype=np.float32)
        size = images.shape[1:3]
        count = len(images)
        columns = len(self.plan) + 1
        results: list[ImageSanity] = []
        trained: dict[str, list[np.ndarray]] = {}
        try:
            self.randomizer.restore()
            if self.class_index is None:
                self._classes.assign(self._trained_classes(images))
            for name, method in self.methods.items():
                explanations = method.explain(images)
                trained[name] = [self._at_input(e, size) for e in explanations]
                if not results:
                    results = [
                        ImageSanity(e.targets[0], e.outputs[0], e.predicted or (-1, math.nan))
                        for e in explanations
                    ]
                for result, explanation, full in zip(
                    results, explanations, trained[name], strict=True
                ):
                    if not _finite(explanation):
                        result.error = (
                            "the model's output or the map is not finite (NaN or infinity) for "
                            "this image; check the model and its preprocessing (--preprocess)"
                        )
                    result.similarity[name] = {m: [] for m in MEASURES}
                    result.maps[name] = [normalize_absolute(full).astype(np.float32)]
            if progress is not None:
                progress(1 / columns)
            for number, step in enumerate(self.plan, start=2):
                self.randomizer.apply(step.groups)
                for name, method in self.methods.items():
                    explanations = method.explain(images)
                    for b in range(count):
                        full = self._at_input(explanations[b], size)
                        values = similarities(trained[name][b], full)
                        for measure in MEASURES:
                            results[b].similarity[name][measure].append(values[measure])
                        results[b].maps[name].append(normalize_absolute(full).astype(np.float32))
                if progress is not None:
                    progress(number / columns)
        finally:
            self.randomizer.restore()
        return results


def _finite(explanation: Explanation) -> bool:
    return all(math.isfinite(v) for v in explanation.outputs) and all(
        np.isfinite(m).all() for m in explanation.maps
    )


def mean_curves(
    results: list[ImageSanity], methods: list[str], steps: int
) -> dict[str, dict[str, dict[str, list[float | None]]]]:
    """method -> {"mean", "std"} -> measure -> one value per step, over the successful images
    (None where no image has a finite value)."""
    curves: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    for method in methods:
        means: dict[str, list[float | None]] = {}
        stds: dict[str, list[float | None]] = {}
        for measure in MEASURES:
            means[measure], stds[measure] = [], []
            for step in range(steps):
                values = [
                    r.similarity[method][measure][step]
                    for r in results
                    if r.error is None and math.isfinite(r.similarity[method][measure][step])
                ]
                means[measure].append(round(float(np.mean(values)), 6) if values else None)
                stds[measure].append(round(float(np.std(values)), 6) if values else None)
        curves[method] = {"mean": means, "std": stds}
    return curves


def verdict(
    curves: dict[str, dict[str, dict[str, list[float | None]]]],
    plan: list[Step],
    max_similarity: float,
    images: int,
) -> dict[str, Any]:
    """Pass / fail per method on the mean Spearman of |map| after the first step (the head)."""
    methods: dict[str, Any] = {}
    for method, curve in curves.items():
        values = curve["mean"][VERDICT_MEASURE]
        value = values[0] if values else None
        methods[method] = {
            "similarity": value,
            "passed": None if value is None else bool(value < max_similarity),
        }
    decided = [m["passed"] for m in methods.values() if m["passed"] is not None]
    return {
        "passed": None if not decided or len(decided) < len(methods) else all(decided),
        "statistic": VERDICT_MEASURE,
        "step": plan[0].label if plan else None,
        "max_similarity": max_similarity,
        "images": images,
        "failed": [name for name, m in methods.items() if m["passed"] is False],
        "methods": methods,
    }

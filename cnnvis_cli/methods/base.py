"""The interface every explanation method implements.

A method is built once per run for a model (so its compiled functions are traced once) from
three typed pieces: its own frozen :class:`~cnnvis_cli.options.Options` (``options_type``), the
:class:`~cnnvis_cli.core.targets.Targets` to explain and the
:class:`~cnnvis_cli.core.batching.Batching` sizes. It is then called on batches of raw 0..255
pixels and returns one :class:`Explanation` per image: the target classes, the model's outputs for
them, one map per target at the method's native resolution (the pipeline resizes maps to each
input's own resolution), the model's own top-1 prediction and any typed per-method figures
(:class:`Facts`).

Every computation runs inside a compiled function (``Method.compile``): gradients are only ever
taken in traced functions that ask for input or feature gradients (see ``core/tracing.py``).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from cnnvis_cli.core.adapter import Forward, ModelAdapter
from cnnvis_cli.core.batching import Batching, pad_rows
from cnnvis_cli.core.targets import Targets, gather_targets, top1
from cnnvis_cli.core.tracing import Compiled
from cnnvis_cli.errors import ModelError
from cnnvis_cli.options import Options

ProgressCallback = Callable[[float], None]
"""Called with the fraction (0..1) of the current batch that is done."""

MapKind = Literal["heatmap", "signed", "gradient"]
"""``heatmap``: h x w in [0, 1]; ``signed``: h x w in [-1, 1] (drawn with a diverging colormap);
``gradient``: signed, unnormalised h x w x c (drawn centred on grey)."""


@dataclass(frozen=True)
class Facts:
    """Typed per-image figures a method reports beside its maps (see subclasses)."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Panel:
    """One method's maps for one image, as a column of a ``compare`` panel."""

    method: str
    title: str
    kind: MapKind
    maps: list[np.ndarray]
    scales: list[float] | None = None  # as Explanation.scales


@dataclass
class Explanation:
    """What a method found for one image.

    ``scales``: per target, the factor the method divided its map by to bring it into [0, 1]
    (or [-1, 1]), in the method's own units (e.g. max - min of a CAM's ReLU(sum_k w_k A^k),
    occlusion's largest drop). The renderer multiplies each map by ``scale / max(scales)`` to
    show an image's targets on one scale (``--scale joint``); None: the maps are not
    comparable (shown each on its own scale).
    """

    targets: list[int]  # explained class indices
    outputs: list[float]  # the model's output for each target (a probability for softmax heads)
    maps: list[np.ndarray]  # one map per target, of the method's ``kind``
    kind: MapKind = "heatmap"
    predicted: tuple[int, float] | None = None  # the model's own top-1 class and output
    facts: Facts | None = None
    panels: list[Panel] = field(default_factory=list)
    scales: list[float] | None = None


class Method(ABC):
    """Base class of every explanation method (one file each in ``cnnvis_cli/methods/``)."""

    name: ClassVar[str]
    title: ClassVar[str]
    options_type: ClassVar[type[Options]] = Options
    kind: ClassVar[MapKind] = "heatmap"
    needs_gradients: ClassVar[bool] = True  # False: forward passes only (runs on SavedModels)
    pixel_level: ClassVar[bool] = False  # True: per-pixel maps, clipped at --clip for display

    def __init__(
        self,
        adapter: ModelAdapter,
        options: Options | None = None,
        *,
        targets: Targets | None = None,
        batching: Batching | None = None,
    ) -> None:
        self.options = options if options is not None else self.options_type()
        if not isinstance(self.options, self.options_type):
            raise TypeError(f"{self.name} takes {self.options_type.__name__}")
        if adapter.forward_only and self.needs_gradients:
            raise ModelError(
                f"{adapter.source}: a SavedModel directory exposes forward passes only (no "
                f"layers or gradients), so {self.name} cannot run on it; use a black-box method "
                "(occlusion, rise, kernelshap, lime, sobol), or load the .keras file the model was "
                "saved from"
            )
        self.adapter = adapter
        self.targets = targets or Targets()
        self.targets.check(adapter.num_classes)
        self.batching = batching or Batching()
        self.functions: list[Compiled] = []

    @classmethod
    def create(
        cls,
        adapter: ModelAdapter,
        *,
        class_index: int | None = None,
        top_k: int = 1,
        batch_size: int = 16,
        eval_batch: int = 64,
        **options: Any,
    ) -> Method:
        """Keyword shortcut: ``GradCAM.create(adapter, layer="conv", top_k=2, batch_size=4)``.

        ``options`` are the fields of the method's ``options_type``; ``batch_size`` counts images
        per call, ``eval_batch`` model evaluations per call (copies of one image).
        """
        targets = Targets(class_index, 1 if class_index is not None else top_k)
        return cls(
            adapter,
            cls.options_type(**options),
            targets=targets,
            batching=Batching(batch_size, eval_batch),
        )

    @property
    def top_k(self) -> int:
        """K, the number of targets explained per image."""
        return self.targets.count

    def compile(self, function: Callable[..., Any]) -> Compiled:
        """``function`` as a compiled function, traced once per input signature."""
        compiled = Compiled(function)
        self.functions.append(compiled)
        return compiled

    def trace_counts(self) -> dict[str, int]:
        """How many times each compiled function of this method was traced (0: never run)."""
        return {f.python_function.__name__.strip("_"): f.traces for f in self.functions}

    def params(self) -> dict[str, Any]:
        """What the summary records as the run's ``params``: the options plus resolved facts."""
        return {
            "class_index": self.targets.class_index,
            "top_k": self.top_k,
            **self.options.as_params(),
        }

    def notes(self) -> list[str]:
        """Caveats worth telling the user once per run (e.g. layers a method cannot handle)."""
        return []

    @abstractmethod
    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        """Explain a batch of raw images (N x h x w x c float32, N <= batching.images)."""

    # -- helpers for compiled functions ---------------------------------------------------------

    def chosen(self, forward: Forward, targets: Any = None) -> dict[str, Any]:
        """The targets (given, or selected from the outputs) and what the summary reports on
        them: their outputs, and the model's own top-1 class and output."""
        if targets is None:
            targets = self.targets.select(forward.outputs)
        predicted, predicted_output = top1(forward.outputs)
        return {
            "targets": targets,
            "outputs": gather_targets(forward.outputs, targets),
            "predicted": predicted,
            "predicted_output": predicted_output,
        }


def explanations_from(
    result: dict[str, Any], kind: MapKind, count: int | None = None, facts: Any = None
) -> list[Explanation]:
    """Per-image Explanations from a compiled result holding (B, K, ...) ``maps``, (B, K)
    ``targets`` and ``outputs`` and (B,) ``predicted`` / ``predicted_output`` (arrays or
    tensors); ``count`` keeps the first images only (the rest was padding)."""
    values = {k: np.asarray(v) for k, v in result.items()}
    count = len(values["targets"]) if count is None else count
    return [
        Explanation(
            targets=[int(c) for c in values["targets"][b]],
            outputs=[float(s) for s in values["outputs"][b]],
            maps=[np.asarray(m, dtype=np.float32) for m in values["maps"][b]],
            kind=kind,
            predicted=(int(values["predicted"][b]), float(values["predicted_output"][b])),
            facts=facts[b] if facts is not None else None,
            scales=[float(s) for s in values["scales"][b]] if "scales" in values else None,
        )
        for b in range(count)
    ]


class BatchMethod(Method):
    """A method that explains a whole step of images in one compiled call of :meth:`compute`.

    Short batches are padded (repeating the last image) to ``batching.images`` when the model's
    input size is fixed, so ``compute`` is traced once.
    """

    def __init__(self, adapter: ModelAdapter, options: Options | None = None, **kwargs: Any):
        super().__init__(adapter, options, **kwargs)
        self._compiled = self.compile(self.compute)

    @abstractmethod
    def compute(self, raw: Any) -> dict[str, Any]:
        """The compiled computation: a dict with ``maps`` (B, K, ...) and :meth:`chosen`'s keys."""

    def finish(self, maps: np.ndarray) -> np.ndarray:
        """Post-processing of the (B, K, ...) maps in NumPy (none by default)."""
        return maps

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        count = len(images)
        if count == 0:
            return []
        images = np.asarray(images, dtype=np.float32)
        if self.adapter.input_size is not None:
            images = pad_rows(images, self.batching.images)
        result = {k: np.asarray(v) for k, v in self._compiled(images).items()}
        result["maps"] = self.finish(result["maps"])
        return explanations_from(result, self.kind, count)

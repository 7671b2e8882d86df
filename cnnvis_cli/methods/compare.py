"""Several methods on the same images, for one side-by-side panel per image.

Methods disagree in instructive ways: Grad-CAM is coarse but class-discriminative, occlusion
measures what the score actually depends on, guided Grad-CAM adds pixel-level detail. Seeing
them next to each other is how people decide which to trust.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from cnnvis_cli.methods.base import Explanation, Method, ProgressCallback
from cnnvis_cli.model import ModelAdapter

DEFAULT_COLUMNS = ("gradcam", "occlusion", "guided-gradcam")


def accepted_options(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that ``cls.__init__`` takes by name (None values dropped)."""
    names = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in options.items() if k in names and v is not None}


class Compare(Method):
    """Run ``methods`` on each batch; explanations carry every method's maps as columns."""

    name = "compare"
    title = "Compare"
    batch_counts_images = False  # occlusion's batch counts occluded copies

    def __init__(
        self,
        adapter: ModelAdapter,
        *,
        methods: tuple[str, ...] | list[str] = DEFAULT_COLUMNS,
        **options: Any,
    ) -> None:
        from cnnvis_cli.methods import get_method, method_names

        base = {
            k: options.pop(k)
            for k in ("class_index", "top_k", "batch_size", "eager")
            if k in options
        }
        super().__init__(adapter, **base)
        unknown = [m for m in methods if m not in method_names() or m == self.name]
        if unknown or not methods:
            choices = ", ".join(m for m in method_names() if m != self.name)
            raise ValueError(f"unknown method(s) {', '.join(unknown)} for compare; use {choices}")
        self.columns: list[Method] = []
        for method_name in methods:
            cls = get_method(method_name)
            self.columns.append(cls(adapter, **base, **accepted_options(cls, options)))

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "methods": [m.name for m in self.columns],
            **{m.name: m.params() for m in self.columns},
        }

    def notes(self) -> list[str]:
        return list(dict.fromkeys(note for m in self.columns for note in m.notes()))

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        """Each column method pads (or not) in its own way, so the batch is passed as is."""
        return self._explain(images, progress) if len(images) else []

    def _explain(self, images: np.ndarray, progress: ProgressCallback | None) -> list[Explanation]:
        per_method = []
        share = 1.0 / len(self.columns)
        for i, method in enumerate(self.columns):
            scaled = None
            if progress is not None:

                def scaled(fraction: float, offset: float = i * share) -> None:
                    progress(offset + fraction * share)

            per_method.append(method.explain(images, scaled))
        combined = []
        for b, first in enumerate(per_method[0]):
            columns = [
                (method, results[b].maps)
                for method, results in zip(self.columns, per_method, strict=True)
            ]
            combined.append(
                Explanation(
                    class_indices=first.class_indices,
                    scores=first.scores,
                    maps=first.maps,
                    extras={"columns": columns},
                )
            )
        return combined

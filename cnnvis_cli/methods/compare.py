"""Several methods on the same images, for one side-by-side panel per image.

Methods disagree in instructive ways: Grad-CAM is coarse but class-discriminative, occlusion
measures what the score actually depends on, guided Grad-CAM adds pixel-level detail. Seeing
them next to each other is how people decide which to trust. Each column method gets its own
typed options (``cnnvis compare`` accepts the union of the chosen methods' options).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.methods.base import Explanation, Method, Panel, ProgressCallback
from cnnvis_cli.options import Options, option

DEFAULT_COLUMNS = "gradcam,occlusion,guided-gradcam"


def split_methods(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [name.strip() for name in str(text).split(",") if name.strip()]


def check_method_names(chosen: list[str], what: str) -> None:
    """ValueError unless ``chosen`` is a non-empty list of methods (``compare`` excluded)."""
    from cnnvis_cli.methods import method_names

    choices = [m for m in method_names() if m != "compare"]
    unknown = [m for m in chosen if m not in choices]
    if unknown or not chosen:
        raise ValueError(
            f"unknown method(s) {', '.join(unknown) or '(none)'} for {what}; use "
            f"{', '.join(choices)}"
        )


@dataclass(frozen=True)
class CompareOptions(Options):
    methods: str = option(
        DEFAULT_COLUMNS,
        "Comma-separated methods, one panel column each.",
        metavar="METHOD,METHOD,...",
    )

    def __post_init__(self) -> None:
        check_method_names(split_methods(self.methods), "compare")

    @property
    def names(self) -> list[str]:
        return split_methods(self.methods)

    def as_params(self) -> dict[str, Any]:
        return {"methods": self.names}


class Compare(Method):
    """Run several methods on each batch; each explanation carries one panel per method."""

    name = "compare"
    title = "Compare"
    options_type = CompareOptions

    def __init__(
        self,
        adapter: ModelAdapter,
        options: CompareOptions | None = None,
        *,
        column_options: dict[str, Options] | None = None,
        **kwargs: Any,
    ) -> None:
        from cnnvis_cli.methods import get_method

        super().__init__(adapter, options, **kwargs)
        column_options = column_options or {}
        self.columns: list[Method] = [
            get_method(name)(adapter, column_options.get(name), **kwargs)
            for name in self.options.names
        ]
        self.needs_gradients = any(m.needs_gradients for m in self.columns)

    def params(self) -> dict[str, Any]:
        return {**super().params(), **{m.name: m.params() for m in self.columns}}

    def notes(self) -> list[str]:
        return list(dict.fromkeys(note for m in self.columns for note in m.notes()))

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        if len(images) == 0:
            return []
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
            panels = [
                Panel(
                    method.name, method.title, results[b].kind, results[b].maps, results[b].scales
                )
                for method, results in zip(self.columns, per_method, strict=True)
            ]
            combined.append(
                Explanation(
                    targets=first.targets,
                    outputs=first.outputs,
                    maps=first.maps,
                    kind=first.kind,
                    predicted=first.predicted,
                    facts=first.facts,
                    panels=panels,
                    scales=first.scales,
                )
            )
        return combined

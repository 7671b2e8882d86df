"""``cnnvis check``: a method's heatmaps against known regions, as a CI gate (exit 3 on fail)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from cnnvis_cli.cli.errors import user_errors
from cnnvis_cli.cli.methods import (
    column_options,
    common_parameters,
    options_classes,
    run_and_exit,
    run_config,
    with_signature,
)
from cnnvis_cli.cli.parameters import given, merged_parameters, parameters
from cnnvis_cli.options import option

GATE_PANEL = "Gate"


@dataclass(frozen=True)
class CheckOptions:
    """The region check's own options."""

    regions: Path = option(
        Path(),
        "Boxes JSON (file name -> x0, y0, x1, y1 in pixels) or a folder of mask PNGs with the "
        "inputs' stems.",
        metavar="PATH",
        required=True,
        panel=GATE_PANEL,
    )
    method: str = option("gradcam", "Method whose heatmap is checked.", metavar="METHOD")
    min_energy: float = option(
        0.5,
        "Minimum mean share of heatmap mass inside the regions.",
        metavar="X",
        min=0.0,
        max=1.0,
        panel=GATE_PANEL,
    )
    min_hit_rate: float = option(
        0.9,
        "Minimum share of images whose heatmap maximum is inside the region.",
        metavar="X",
        min=0.0,
        max=1.0,
        panel=GATE_PANEL,
    )
    tolerance: int = option(
        15, "Pointing-game tolerance in pixels.", metavar="PX", min=0, panel=GATE_PANEL
    )
    min_accuracy: float = option(
        1.0,
        "With --labels: minimum share of labelled images the model classifies as labelled "
        "(1.0: one misclassified image fails the check).",
        metavar="X",
        min=0.0,
        max=1.0,
        panel=GATE_PANEL,
    )
    junit: Path | None = option(
        None, "Write JUnit XML (one test case per image).", metavar="FILE", panel=GATE_PANEL
    )


def check_command() -> Any:
    """The Typer command function of ``cnnvis check``."""
    own = parameters(CheckOptions)
    merged = merged_parameters(options_classes(), skip={"methods"})
    merged_names = [p.name for p in merged]

    def check(ctx: typer.Context, **values: Any) -> None:
        from cnnvis_cli.evaluation.check import RegionCheck, Regions
        from cnnvis_cli.methods import get_method, method_names

        with user_errors():
            method = values["method"]
            if method not in method_names() or method == "compare":
                choices = ", ".join(m for m in method_names() if m != "compare")
                raise ValueError(f"unknown --method {method!r}; use {choices}")
            options = column_options([method], given(ctx, merged_names, values))[method]
            gate = RegionCheck(
                Regions(Path(values["regions"])),
                min_energy=values["min_energy"],
                min_hit_rate=values["min_hit_rate"],
                tolerance=values["tolerance"],
                min_accuracy=values["min_accuracy"],
            )
            config = run_config(
                values,
                method=method,
                method_options=options,
                check=gate,
                junit=values["junit"],
                title=f"check ({get_method(method).name})",
            )
        run_and_exit(config)

    context = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
    )
    with_signature(check, [context, *common_parameters(), *own, *merged])
    check.__doc__ = (
        "Does the model look at the right place? Energy inside known regions and the pointing "
        "game; exit 3 when the set fails."
    )
    return check

"""``cnnvis maximize``: feature visualisation by activation maximisation (no input image).

Writes one PNG per class or filter, a labelled grid (``grid.png``) and ``summary.json`` (each
target's objective at the noise start and after optimisation) into ``--out``. The optimisation
lives in ``cnnvis_cli/visualize/maximize.py``; TensorFlow is imported only when the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cnnvis_cli.cli.errors import abort, user_errors

EPILOG = (
    "[bold]Examples[/bold]\n\n"
    "cnnvis maximize -m model.keras --class cross -o viz/\n\n"
    "cnnvis maximize -m model.keras --layer conv2 --filters 0-15 --steps 256"
)


def maximize(
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Model: a .keras/.h5 file or keras:NAME.", metavar="MODEL"
        ),
    ],
    class_specs: Annotated[
        list[str] | None,
        typer.Option(
            "--class",
            "-c",
            help="Class to visualise: an index or a name (repeat for several).",
            metavar="CLASS",
        ),
    ] = None,
    layer: Annotated[
        str | None,
        typer.Option(help="Layer whose filters to visualise (see `cnnvis layers`).", metavar="L"),
    ] = None,
    filters: Annotated[
        str,
        typer.Option(help="Filters of --layer: e.g. 0-15 or 0,3,5-7.", metavar="SPEC"),
    ] = "0-7",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.", metavar="PATH")] = Path(
        "cnnvis-out/maximize"
    ),
    steps: Annotated[int, typer.Option(help="Gradient ascent steps.", metavar="N", min=1)] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the noise start and the jitter.")] = 0,
    size: Annotated[
        str | None,
        typer.Option(help="Canvas HxW (default: the model's input size).", metavar="HxW"),
    ] = None,
    lr: Annotated[float, typer.Option(help="Adam learning rate on the spectrum.")] = 0.05,
    tv: Annotated[float, typer.Option(help="Total-variation penalty weight.")] = 0.05,
    l2: Annotated[float, typer.Option(help="L2 penalty weight (towards mid-gray).")] = 0.05,
    batch_size: Annotated[
        int, typer.Option("--batch-size", "-b", help="Targets optimised together.", min=1)
    ] = 8,
    preprocess: Annotated[str, typer.Option(help="As for the method commands.")] = "auto",
    class_names: Annotated[
        Path | None, typer.Option(help="JSON list or text file of class names.", metavar="FILE")
    ] = None,
    weights: Annotated[str, typer.Option(help="For keras:NAME models.")] = "imagenet",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> None:
    """Feature visualisation: optimise an image for a class or a layer's filters (no input)."""
    import numpy as np
    from rich.console import Console

    from cnnvis_cli.core.loading import load_model
    from cnnvis_cli.output.files import atomic_write
    from cnnvis_cli.output.progress import ProgressReporter
    from cnnvis_cli.output.render import write_png
    from cnnvis_cli.visualize.maximize import (
        Maximizer,
        MaximizeSettings,
        class_objective,
        filter_objective,
        grid_image,
        parse_size,
    )

    if bool(class_specs) == (layer is not None):
        raise abort("give either --class C or --layer L (with --filters)")
    with user_errors():
        settings = MaximizeSettings(
            steps=steps,
            seed=seed,
            size=parse_size(size) if size else None,
            lr=lr,
            tv=tv,
            l2=l2,
            batch=batch_size,
        )
        adapter = load_model(model, class_names=class_names, preprocess=preprocess, weights=weights)
        if layer is not None:
            objective = filter_objective(adapter, layer, filters)
        else:
            objective = class_objective(adapter, class_specs or [])
        maximizer = Maximizer(adapter, objective, settings)
    console = Console(stderr=True)
    with ProgressReporter(console, quiet=quiet) as reporter:
        reporter.start(maximizer.total_steps(), "maximize", unit="steps")
        results = maximizer.run(lambda done: reporter.advance(done))
        reporter.finish()
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for result in results:
        path = out / f"{result.target.stem}.png"
        image = result.image
        write_png(path, image if image.shape[2] == 3 else np.repeat(image, 3, axis=2))
        items.append(
            {
                "target": result.target.index,
                "label": result.target.label,
                "file": path.name,
                "start_score": result.start_score,
                "final_score": result.final_score,
            }
        )
    write_png(out / "grid.png", grid_image(results))
    stuck = [r.target.label for r in results if not r.final_score > r.start_score]
    if stuck and not quiet:
        names = ", ".join(stuck)
        typer.echo(f"note: not raised from the noise start (e.g. a dead ReLU): {names}", err=True)
    summary = {
        "command": "maximize",
        "model": adapter.describe(),
        "objective": "logit" if objective.kind == "class" else "mean filter activation",
        "layer": objective.layer.path if objective.layer is not None else None,
        "size": [maximizer.height, maximizer.width],
        "params": {
            "steps": steps,
            "seed": seed,
            "lr": lr,
            "tv": tv,
            "l2": l2,
            "batch_size": batch_size,
            "parameterization": "fourier, decorrelated colour, sigmoid",
        },
        "results": items,
    }
    atomic_write(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    if not quiet:
        typer.echo(f"{len(items)} image(s) and grid.png written to {out.resolve()}/", err=True)

"""``cnnvis demo``: the bundled demo model on the sample scenes, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnvis_cli.cli.errors import abort


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.", metavar="PATH")] = Path(
        "cnnvis-out/demo"
    ),
    method: Annotated[
        str,
        typer.Option(
            "--method", help="Method to run (compare: one panel of several).", metavar="METHOD"
        ),
    ] = "compare",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or table.")] = False,
) -> None:
    """Run on the bundled demo model and sample images (a compare panel per image)."""
    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.runner import run
    from cnnvis_cli.demo.paths import demo_model_path, sample_images_dir
    from cnnvis_cli.methods import method_names

    if method not in method_names():
        raise abort(f"unknown --method {method!r}; use {', '.join(method_names())}")
    samples = sample_images_dir()
    if samples is None:
        raise abort("sample_images/ not found; run from a clone of the cnnvis repo")
    config = RunConfig(
        method=method,
        images=[str(samples)],
        model=str(demo_model_path()),
        out=out,
        quiet=quiet,
        report=True,
    )
    code = run(config)
    if code in (0, 1):
        where = out.resolve()
        typer.echo(f"PNGs written to {where}/ — open {where / 'index.html'} for the gallery")
    raise typer.Exit(code)

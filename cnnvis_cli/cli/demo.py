"""``cnnvis demo``: the bundled demo model on generated sample scenes, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnvis_cli.cli.errors import abort

SAMPLES = "samples"


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
    """Run on the bundled demo model and 12 sample scenes (a compare panel per image).

    The scenes, their boxes and labels are written to OUT/samples/ by the seeded generator
    (the same images as the repository's sample_images/), so this works from any folder.
    """
    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.runner import prepare_output_dir, run
    from cnnvis_cli.demo.make_samples import make_samples
    from cnnvis_cli.demo.paths import demo_model_path
    from cnnvis_cli.errors import CnnvisError
    from cnnvis_cli.methods import method_names

    if method not in method_names():
        raise abort(f"unknown --method {method!r}; use {', '.join(method_names())}")
    samples = out / SAMPLES
    try:
        prepare_output_dir(out)
        make_samples(samples)
    except CnnvisError as exc:
        raise abort(str(exc)) from None
    except OSError as exc:
        raise abort(
            f"cannot write the sample scenes to {samples} ({exc.strerror or exc})"
        ) from None
    config = RunConfig(
        method=method,
        images=[str(samples)],
        model=str(demo_model_path()),
        out=out,
        quiet=quiet,
        report=True,
        labels=samples / "labels.json",
        title=f"demo ({method})",
    )
    code = run(config)
    if code in (0, 1):
        where = out.resolve()
        typer.echo(f"Pictures written to {where}/ — open {where / 'index.html'} for the gallery")
        if not quiet:
            typer.echo(
                "Next: does the model look at the object? (the shortcut model fails; exit 3)\n"
                f"  cnnvis check {samples} -m demo:shapes --regions {samples / 'boxes.json'} "
                f"--labels {samples / 'labels.json'}\n"
                f"  cnnvis check {samples} -m demo:shortcut --regions {samples / 'boxes.json'} "
                f"--labels {samples / 'labels.json'}"
            )
    raise typer.Exit(code)

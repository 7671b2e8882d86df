"""``cnnvis merge``: join the output folders of a run's shards into one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cnnvis_cli.cli.errors import user_errors


def merge(
    folders: Annotated[
        list[Path],
        typer.Argument(
            help="The shards' output folders.", metavar="FOLDERS...", show_default=False
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The merged output folder.", metavar="PATH")
    ] = Path("cnnvis-out"),
    report: Annotated[bool, typer.Option("--report", help="Write OUT/index.html.")] = False,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write JUnit XML (check runs).", metavar="FILE")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the merged summary JSON to stdout.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No table; errors only.")] = False,
) -> None:
    """Merge the outputs and summaries of `--shard I/N` runs into one run.

    Exit codes as for the run itself: 0, 1 (some inputs failed), 3 (the merged check failed);
    2 when the folders are not shards of one run.
    """
    from rich.console import Console

    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.merge import merge_runs
    from cnnvis_cli.core.runner import check_writable_file, finish_outputs, prepare_output_dir
    from cnnvis_cli.output.files import OutputLock
    from cnnvis_cli.output.summary import print_json

    stderr = Console(stderr=True)
    with user_errors():
        if junit is not None:
            check_writable_file(junit, "the JUnit file")
        prepare_output_dir(out)
        with OutputLock(out):
            summary, notes = merge_runs(folders, out)
            config = RunConfig(
                out=out, report=report, junit=junit, title=f"merge ({summary.method})"
            )
            failed = finish_outputs(config, summary, lambda line: stderr.print(f"error: {line}"))
    for note in notes:
        stderr.print(f"note: {note}", highlight=False)
    if json_output:
        print_json(summary.to_json())
    if not quiet:
        summary.print_table(
            stderr if json_output else Console(), title=f"cnnvis merge ({summary.method})"
        )
    raise typer.Exit(failed if failed is not None else summary.exit_code())

"""``cnnvis layers``: what cnnvis sees in a model — layers, the automatic choice, input, head."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnnvis_cli.cli.errors import user_errors

if TYPE_CHECKING:  # imported by the command only: `cnnvis --help` stays light
    from cnnvis_cli.core.adapter import LayerInfo, ModelAdapter


def _shape(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _auto(adapter: ModelAdapter) -> LayerInfo | None:
    candidates = adapter.spatial_layers()
    return candidates[-1] if candidates else None


def layers_table(adapter: ModelAdapter, show_all: bool = False) -> Table:
    """CAM-able layers (or all layers), the automatic choice marked; paths never cut."""
    auto = _auto(adapter)
    table = Table(title=escape(adapter.source), title_justify="left")
    table.add_column("", width=1)
    table.add_column("layer path", overflow="fold")
    table.add_column("type")
    table.add_column("output shape")
    shown = adapter.all_layers if show_all else adapter.spatial_layers()
    for info in shown:
        mark = "*" if auto is not None and info.path == auto.path else ""
        if mark:
            style = "bold green"
        elif not info.is_cam_layer:
            style = "dim"
        else:
            style = None
        kind = info.class_name if info.aligned else f"{info.class_name} (axes reordered)"
        table.add_row(mark, escape(info.path), kind, _shape(info.output_shape), style=style)
    return table


def model_facts(adapter: ModelAdapter) -> list[str]:
    """Input size, channels, preprocessing (and why) and score head."""
    size = adapter.input_size
    shape = f"{size[0]}x{size[1]}" if size else "dynamic size"
    return [
        f"input {shape}, {adapter.channels} channel(s), head {adapter.head} "
        f"({adapter.num_classes} classes)",
        f"preprocess {adapter.preprocess_mode}: {adapter.preprocess_reason}",
    ]


def print_layers(
    adapter: ModelAdapter, console: Console, show_all: bool = False, plain: bool = False
) -> None:
    """Print the layer table (or a plain list, one path per line), the facts and the choice."""
    auto = _auto(adapter)
    if plain:
        shown = adapter.all_layers if show_all else adapter.spatial_layers()
        for info in shown:
            mark = "*" if auto is not None and info.path == auto.path else " "
            console.print(f"{mark} {escape(info.path)}", highlight=False, soft_wrap=True)
    else:
        console.print(layers_table(adapter, show_all))
    for line in model_facts(adapter):
        console.print(escape(line), soft_wrap=True, highlight=False)
    if auto is not None:
        console.print(
            f"* automatic Grad-CAM layer: [bold]{escape(auto.path)}[/bold]", soft_wrap=True
        )
    else:
        console.print("no spatial layer: Grad-CAM is not possible; use `cnnvis occlusion`")


def layers(
    model: Annotated[
        str,
        typer.Argument(
            help="Model: a .keras/.h5 file, keras:NAME or demo:shapes.", metavar="MODEL"
        ),
    ],
    show_all: Annotated[bool, typer.Option("--all", help="List every layer.")] = False,
    plain: Annotated[
        bool,
        typer.Option(
            "--plain", help="One layer path per line (the default when not on a terminal)."
        ),
    ] = False,
    preprocess: Annotated[
        str, typer.Option(help="As for the method commands.", metavar="MODE")
    ] = "auto",
    weights: Annotated[
        str, typer.Option(help="For keras:NAME models.", metavar="imagenet|PATH|none")
    ] = "imagenet",
    output: Annotated[
        str | None,
        typer.Option(help="Output of a multi-output model (name or index).", metavar="NAME|INDEX"),
    ] = None,
    unsafe_load: Annotated[
        bool, typer.Option("--unsafe-load", help="Turn Keras' safe mode off (RUNS CODE).")
    ] = False,
    custom_objects: Annotated[
        str | None,
        typer.Option(help="Python file defining custom layers (RUNS CODE).", metavar="FILE.py"),
    ] = None,
) -> None:
    """List the layers Grad-CAM can use, the automatic choice, input and head."""
    from cnnvis_cli.core.loading import load_model

    with user_errors():
        adapter = load_model(
            model,
            preprocess=preprocess,
            weights=weights,
            output=output,
            unsafe=unsafe_load,
            custom_objects=custom_objects,
        )
    console = Console()
    print_layers(adapter, console, show_all, plain=plain or not console.is_terminal)

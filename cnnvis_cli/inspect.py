"""``cnnvis layers``: what cnnvis sees in a model, as a Rich table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cnnvis_cli.model import ModelAdapter


def _shape(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def layers_table(adapter: ModelAdapter, show_all: bool = False) -> Table:
    """Candidate Grad-CAM layers (or all layers), the automatic choice marked."""
    candidates = adapter.spatial_layers()
    auto = candidates[-1].path if candidates else None
    table = Table(title=f"{adapter.source}", title_justify="left")
    table.add_column("", width=1)
    table.add_column("layer path")
    table.add_column("type")
    table.add_column("output shape")
    for info in adapter.all_layers if show_all else candidates:
        mark = "*" if info.path == auto else ""
        style = "bold green" if mark else ("dim" if not info.is_spatial else None)
        table.add_row(mark, info.path, info.class_name, _shape(info.output_shape), style=style)
    return table


def model_facts(adapter: ModelAdapter) -> str:
    """One line: input size, channels, preprocessing and score head."""
    size = adapter.input_size
    shape = f"{size[0]}x{size[1]}" if size else "dynamic size"
    return (
        f"input {shape}, {adapter.channels} channel(s), preprocess {adapter.preprocess_mode}, "
        f"head {adapter.head} ({adapter.num_classes} classes)"
    )


def print_layers(adapter: ModelAdapter, console: Console, show_all: bool = False) -> None:
    """Print the layer table, the model facts and the automatic choice."""
    console.print(layers_table(adapter, show_all))
    console.print(model_facts(adapter), soft_wrap=True)
    auto = adapter.spatial_layers()
    if auto:
        console.print(f"* automatic Grad-CAM layer: [bold]{auto[-1].path}[/bold]", soft_wrap=True)
    else:
        console.print("no spatial layer: Grad-CAM is not possible; use `cnnvis occlusion`")

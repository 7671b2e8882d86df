"""What ``cnnvis sanity`` shows: the similarity plot, a grid per image, the table, JUnit cases.

- The plot (``sanity_plot.png``, matplotlib with the Agg canvas, no display needed) is the
  paper's Fig. 4: one panel per measure, the mean similarity to the trained model's maps against
  the randomisation step, one line per method; the verdict's threshold is dashed on its panel.
- The grid (``<stem>_sanity.png``) is the paper's Fig. 2 for one image: a row per method, a
  column per step (the input, the trained model, then each step), each map as the measures see
  it — |map| summed over channels, clipped at its 99th percentile, white = important.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnnvis_cli.evaluation.similarity import MEASURE_LABELS, MEASURES
from cnnvis_cli.output.files import atomic_write
from cnnvis_cli.output.junit import Case
from cnnvis_cli.output.render import grid
from cnnvis_cli.output.summary import strict_json
from cnnvis_cli.output.text import printable

PLOT_NAME = "sanity_plot.png"
TRAINED = "trained"


def step_labels(steps: list[dict[str, Any]]) -> list[str]:
    """Column labels: "trained", then the group each step re-initialised (down to)."""
    return [TRAINED, *(str(step["label"]) for step in steps)]


def grid_picture(
    image: np.ndarray,
    maps: dict[str, list[np.ndarray]],
    titles: dict[str, str],
    labels: list[str],
    header: str,
    tile_height: int = 128,
) -> np.ndarray:
    """One image's grid: a row per method (``maps[method]``: h x w in [0, 1] per column)."""
    picture = np.clip(np.asarray(image, dtype=np.float32) + 0.5, 0, 255).astype(np.uint8)
    if picture.ndim == 2 or picture.shape[2] == 1:
        picture = np.repeat(picture.reshape(*picture.shape[:2], 1), 3, axis=2)
    rows = []
    for method, columns in maps.items():
        tiles = [("input", picture)]
        for label, values in zip(labels, columns, strict=True):
            gray = np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)
            tiles.append((label, np.repeat(gray[:, :, None], 3, axis=2)))
        rows.append((titles.get(method, method), tiles))
    return grid(rows, header, tile_height)


def plot_png(
    curves: dict[str, dict[str, dict[str, list[float | None]]]],
    labels: list[str],
    titles: dict[str, str],
    *,
    title: str,
    threshold: float | None,
    threshold_measure: str,
) -> bytes:
    """The similarity plot as PNG bytes (the trained model's column is 1 by definition)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.1 * len(MEASURES), 3.4), dpi=90, layout="constrained")
    axes = figure.subplots(1, len(MEASURES), sharey=True)
    x = np.arange(len(labels))
    for ax, measure in zip(axes, MEASURES, strict=True):
        for method, curve in curves.items():
            values = [1.0] + [math.nan if v is None else v for v in curve["mean"][measure]]
            ax.plot(x, values, marker="o", markersize=3.5, linewidth=1.6, label=titles[method])
        if threshold is not None and measure == threshold_measure:
            ax.axhline(threshold, color="0.35", linestyle="--", linewidth=1.0)
        ax.axhline(0.0, color="0.8", linewidth=0.8)
        ax.set_title(MEASURE_LABELS[measure], fontsize=10)
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylim(-0.5, 1.05)
        ax.grid(axis="y", color="0.92")
    axes[0].set_ylabel("similarity to the trained model's map")
    axes[-1].legend(fontsize=7, loc="upper right")
    figure.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_plot(path: Path, png: bytes) -> None:
    atomic_write(path, png)


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def sanity_table(sanity: dict[str, Any], title: str) -> Table:
    """A row per step, a column per method: the mean verdict statistic; the verdicts below."""
    verdict = sanity["verdict"]
    statistic = verdict["statistic"]
    methods = list(verdict["methods"])
    table = Table(title=escape(title), title_justify="left")
    table.add_column(f"re-initialised ({sanity['test']})", overflow="fold")
    for method in methods:
        table.add_column(escape(method), justify="right")
    for number, label in enumerate(step_labels(sanity["steps"])[1:]):
        row = [_value(sanity["methods"][m]["mean"][statistic][number]) for m in methods]
        table.add_row(escape(label), *row)
    states = []
    for method in methods:
        passed = verdict["methods"][method]["passed"]
        states.append(
            "[yellow]-[/yellow]"
            if passed is None
            else "[green]passed[/green]"
            if passed
            else "[red]FAILED[/red]"
        )
    table.add_section()
    table.add_row("[bold]verdict[/bold]", *states)
    return table


def print_sanity(console: Console, summary: dict[str, Any], title: str) -> None:
    """The table, then the images, failures, seconds and output folder."""
    sanity = summary["sanity"]
    verdict = sanity["verdict"]
    console.print(sanity_table(sanity, title))
    console.print(
        escape(
            f"{MEASURE_LABELS[verdict['statistic']]} to the trained model's map, mean over "
            f"{verdict['images']} image(s); a method passes when it is below "
            f"{verdict['max_similarity']:g} after re-initialising {verdict['step']}"
        ),
        highlight=False,
        soft_wrap=True,
    )
    totals = summary["totals"]
    failed = totals.get("failed", 0)
    console.print(
        f"images: {totals['processed']} processed of {totals['inputs']}"
        + (f", [red]{failed} failed[/red]" if failed else "")
        + f" · {totals['seconds']:.1f} s · output folder "
        + escape(printable(summary["output_dir"])),
        highlight=False,
        soft_wrap=True,
    )
    if totals.get("interrupted"):
        console.print("[yellow]interrupted[/yellow]: the figures cover the images finished")


def junit_cases(sanity: dict[str, Any], failed_inputs: list[tuple[str, str]]) -> list[Case]:
    """One case per method (failing when its map survives), one erring case per failed input."""
    verdict = sanity["verdict"]
    statistic = MEASURE_LABELS[verdict["statistic"]]
    cases = []
    for method, result in verdict["methods"].items():
        failure = skipped = None
        if result["passed"] is None:
            skipped = "no image was processed"
        elif not result["passed"]:
            failure = (
                f"{statistic} {result['similarity']:.3f} >= {verdict['max_similarity']:g} after "
                f"re-initialising {verdict['step']}: the map barely depends on the learned weights"
            )
        curve = sanity["methods"][method]
        cases.append(
            Case(
                method,
                "cnnvis.sanity",
                failure=failure,
                skipped=skipped,
                output=strict_json({"similarity": result["similarity"], **curve}, indent=None),
            )
        )
    for path, message in failed_inputs:
        cases.append(Case(path, "cnnvis.sanity.input", error=message))
    return cases

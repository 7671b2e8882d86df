"""Progress display on stderr: a Rich bar on a terminal, plain lines otherwise, or silence.

Errors are always shown (one line each, naming the file), even with ``--quiet``. File names are
shown with control characters and undecodable bytes spelled out (``output.text.printable``), so a
crafted name cannot move the cursor or clear the screen.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cnnvis_cli.output.text import printable

PLAIN_INTERVAL_SECONDS = 5.0


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str = "img") -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        rate = f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s"
        return Text(rate, style="progress.data.speed")


class ProgressReporter:
    """Reports a run's progress; use as a context manager around the work."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.interactive = console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._task = None
        self._total = 0
        self._unit = "images"
        self._done = 0.0
        self._started = time.perf_counter()
        self._last_plain = self._started
        self._last_count = -1  # the count last printed in plain mode (printed when it changes)

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def info(self, message: str) -> None:
        """A plain status line (suppressed by --quiet)."""
        if not self.quiet:
            self.console.print(escape(printable(message)), highlight=False, soft_wrap=True)

    def error(self, path: Path | str, message: str) -> None:
        """One line naming the failed file and why."""
        self.fatal(f"{printable(path)}: {message}")

    def warning(self, path: Path | str, message: str) -> None:
        """One line about a file that was processed with a caveat (suppressed by --quiet)."""
        if not self.quiet:
            text = escape(printable(f"{printable(path)}: {message}"))
            self.console.print(f"[yellow]warning[/yellow]: {text}", highlight=False, soft_wrap=True)

    def fatal(self, message: str) -> None:
        """One ``error:`` line (a setup error, or a file that could not be processed)."""
        self.console.print(
            f"[red]error[/red]: {escape(printable(message))}", highlight=False, soft_wrap=True
        )

    def start(self, total: int, label: str, unit: str = "images") -> None:
        """Start the bar (or plain lines) over ``total`` units (images unless told)."""
        self._total = total
        self._unit = unit
        self._started = self._last_plain = time.perf_counter()
        if self.interactive:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn("img" if unit == "images" else unit),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[current]}", style="dim"),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(label, total=total, current="")

    def finish(self) -> None:
        """Every image is accounted for: the bar ends at its total."""
        self.settle(self._total)

    def settle(self, done: int) -> None:
        """The bar shows ``done`` images: the inputs the summary accounts for (after Ctrl-C,
        not the fraction of a batch that was in flight)."""
        self._done = done
        if self._progress is not None:
            self._progress.update(self._task, completed=done)

    def advance(self, amount: float, current: str = "") -> None:
        """Mark ``amount`` images done (fractions allowed for long per-image work)."""
        self._done += amount
        if self._progress is not None:
            self._progress.update(self._task, advance=amount, current=escape(printable(current)))
        elif not self.quiet:
            now = time.perf_counter()
            due = now - self._last_plain >= PLAIN_INTERVAL_SECONDS
            if due and int(self._done) != self._last_count and self._done < self._total:
                self._last_plain, self._last_count = now, int(self._done)
                rate = self._done / max(now - self._started, 1e-9)
                self.console.print(
                    f"{int(self._done)}/{self._total} {self._unit} ({rate:.1f} {self._unit}/s)",
                    highlight=False,
                )

"""The run summary: ``summary.json``, the closing table, and the exit code.

Schema (version 1)::

    {"version": 1, "tool": {...}, "model": {...}, "method": str, "params": {...},
     "output_dir": str,
     "results": [{"input": str, "outputs": {"overlay": str, "raw": str?},
                  "class_index": int, "class_name": str|null, "score": float,
                  "targets": [{"class_index", "class_name", "score", "outputs"}, ...],
                  "error": null|str}, ...],
     "totals": {"inputs", "processed", "failed", "seconds", "images_per_second",
                "classes": {name: count}, "interrupted": bool}}

A failed input has ``error`` set and no outputs.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cnnvis_cli import __version__
from cnnvis_cli.errors import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED
from cnnvis_cli.render import write_text

SUMMARY_VERSION = 1
SUMMARY_NAME = "summary.json"


@dataclass
class Summary:
    """Accumulates per-input results and renders them at the end of a run."""

    method: str
    output_dir: Path
    model: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    check: dict[str, Any] | None = None  # set-level verdict of `cnnvis check`

    def add_success(self, input_path: Path, targets: list[dict[str, Any]], **extra: Any) -> None:
        """Record a processed input; ``targets[0]`` is the primary (top-1 or chosen) class."""
        first = targets[0]
        self.results.append(
            {
                "input": str(input_path),
                "outputs": first["outputs"],
                "class_index": first["class_index"],
                "class_name": first["class_name"],
                "score": first["score"],
                "targets": targets,
                **extra,
                "error": None,
            }
        )

    def add_failure(self, input_path: Path, error: str) -> None:
        """Record an input that could not be processed."""
        self.results.append({"input": str(input_path), "outputs": {}, "error": error})

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if r["error"] is not None)

    @property
    def processed(self) -> int:
        return len(self.results) - self.failed

    def class_counts(self) -> dict[str, int]:
        counts = Counter(
            str(r["class_name"] if r["class_name"] is not None else r["class_index"])
            for r in self.results
            if r["error"] is None
        )
        return dict(counts.most_common())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SUMMARY_VERSION,
            "tool": {"name": "cnnvis", "version": __version__},
            "model": self.model,
            "method": self.method,
            "params": self.params,
            "output_dir": str(self.output_dir),
            "results": self.results,
            **({"check": self.check} if self.check is not None else {}),
            "totals": {
                "inputs": len(self.results),
                "processed": self.processed,
                "failed": self.failed,
                "seconds": round(self.seconds, 3),
                "images_per_second": round(self.processed / self.seconds, 3)
                if self.seconds > 0
                else None,
                "classes": self.class_counts(),
                "interrupted": self.interrupted,
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def write(self) -> Path:
        """Write ``summary.json`` atomically into the output folder."""
        path = self.output_dir / SUMMARY_NAME
        write_text(path, self.to_json() + "\n")
        return path

    def exit_code(self) -> int:
        """130 interrupted, 3 a failed check, 1 some inputs failed, else 0."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.check is not None and not self.check["passed"]:
            return EXIT_CHECK_FAILED
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    def print_table(self, console: Console) -> None:
        """The closing table: images, failures, classes found, output folder, seconds."""
        table = Table(title=f"cnnvis {self.method}", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row("images", f"{self.processed} processed of {len(self.results)}")
        failures = f"[red]{self.failed}[/red]" if self.failed else "0"
        table.add_row("failures", failures)
        classes = ", ".join(f"{name} x{n}" for name, n in self.class_counts().items())
        table.add_row("classes found", classes or "-")
        table.add_row("output folder", str(self.output_dir))
        rate = f" ({self.processed / self.seconds:.1f} images/s)" if self.seconds > 0 else ""
        table.add_row("seconds", f"{self.seconds:.1f}{rate}")
        if self.check is not None:
            verdict = "[green]passed[/green]" if self.check["passed"] else "[red]FAILED[/red]"
            table.add_row(
                "check",
                f"{verdict}: mean energy {self.check['mean_energy']:.2f} "
                f"(min {self.check['min_energy']}), hit rate {self.check['hit_rate']:.2f} "
                f"(min {self.check['min_hit_rate']}) over {self.check['images']} image(s)",
            )
        if self.interrupted:
            table.add_row("status", "[yellow]interrupted[/yellow]")
        console.print(table)

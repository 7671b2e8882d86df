"""The run summary: a :class:`Record` per input, ``summary.json``, the closing table, exit code.

Schema (version 1; fields are only ever added)::

    {"version": 1, "tool": {...}, "model": {...}, "method": str, "params": {...},
     "output_dir": str,
     "results": [{"input": str, "outputs": {"overlay": str, "raw": str?},
                  "class_index": int, "class_name": str|null, "score": float,
                  "targets": [{"class_index", "class_name", "score", "outputs"}, ...],
                  "predicted": {"class_index", "class_name", "score"},
                  <method facts, e.g. "completeness_gap">, "metrics": {...}?, "check": {...}?,
                  "label": {"class_index", "class_name", "correct"}?,
                  "notes": [str]?, "error": null|str}, ...],
     "totals": {"inputs", "processed", "failed", "not_processed", "seconds",
                "images_per_second", "classes": {name: count}, "metrics": {name: mean}?,
                "labelled"?, "misclassified"?, "interrupted": bool},
     "render": {"format", "legend", "scale", "clip", "alpha", "colormap"}?,
     "runs": {run name: "summary-<run>.json"}}

Several runs can write into one output folder (``cnnvis gradcam ... -o out``, then
``cnnvis occlusion ... -o out``): each run also writes ``summary-<run>.json`` (the run's name is
its method, ``check-<method>`` for ``cnnvis check``), and ``summary.json`` is the latest run,
whose ``runs`` lists every run's file in the folder, so earlier runs are not lost.

``score`` is the model's output for the class (a probability for softmax and sigmoid heads).
A failed input has ``error`` set and no outputs. The file is strict JSON: a non-finite number is
written as ``null``, and a file name that is not valid UTF-8 keeps its undecodable bytes as
``\\udcXX`` escapes.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnnvis_cli import __version__
from cnnvis_cli.errors import (
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_TERMINATED,
)
from cnnvis_cli.output.files import write_text
from cnnvis_cli.output.text import printable

SUMMARY_VERSION = 1
SUMMARY_NAME = "summary.json"
RUN_SUMMARY_PREFIX = "summary-"


def run_summary_name(run: str) -> str:
    """The file of one run's summary: ``summary-<run>.json``."""
    return f"{RUN_SUMMARY_PREFIX}{run}.json"


def run_summaries(folder: Path) -> dict[str, Path]:
    """Every run summary in an output folder: run name -> ``summary-<run>.json``."""
    found = {}
    for path in sorted(Path(folder).glob(f"{RUN_SUMMARY_PREFIX}*.json")):
        found[path.name[len(RUN_SUMMARY_PREFIX) : -len(".json")]] = path
    return found


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def strict_json(data: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text (no NaN or Infinity tokens) of ``data``."""
    return json.dumps(finite(data), indent=indent, ensure_ascii=False, allow_nan=False)


def print_json(text: str) -> None:
    """Print JSON text to stdout; undecodable bytes of file names stay ``\\udcXX`` escapes."""
    print(text.encode("utf-8", "backslashreplace").decode("utf-8"), flush=True)


def rounded(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


@dataclass
class TargetRecord:
    """One explained class of one input: its score and the files written for it."""

    class_index: int
    class_name: str | None
    score: float | None
    outputs: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "class_index": self.class_index,
            "class_name": self.class_name,
            "score": self.score,
            "outputs": self.outputs,
        }


@dataclass
class Record:
    """Everything known about one input after a run: shared by summary, report, JUnit, check."""

    input: str
    targets: list[TargetRecord] = field(default_factory=list)
    predicted: TargetRecord | None = None  # the model's own top-1, whatever was explained
    facts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    check: dict[str, Any] | None = None
    label: dict[str, Any] | None = None  # expected class and whether the prediction is right
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    source: dict[str, int] | None = None  # the input's size and mtime when it was read

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def primary(self) -> TargetRecord | None:
        return self.targets[0] if self.targets else None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"input": self.input, "outputs": {}, "error": self.error}
        primary = self.primary
        data: dict[str, Any] = {
            "input": self.input,
            "outputs": primary.outputs if primary else {},
            "class_index": primary.class_index if primary else None,
            "class_name": primary.class_name if primary else None,
            "score": primary.score if primary else None,
            "targets": [t.to_json() for t in self.targets],
        }
        if self.predicted is not None:
            predicted = self.predicted.to_json()
            del predicted["outputs"]
            data["predicted"] = predicted
        data.update(self.facts)
        if self.metrics:
            data["metrics"] = self.metrics
        if self.check is not None:
            data["check"] = self.check
        if self.label is not None:
            data["label"] = self.label
        if self.notes:
            data["notes"] = self.notes
        if self.source is not None:
            data["source"] = self.source
        data["error"] = None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """Read back a record written by :meth:`to_json` (for ``merge`` and the report)."""
        known = {"input", "outputs", "class_index", "class_name", "score", "targets"}
        known |= {"predicted", "metrics", "check", "label", "notes", "error", "source"}
        targets = [
            TargetRecord(
                t["class_index"], t.get("class_name"), t.get("score"), t.get("outputs", {})
            )
            for t in data.get("targets") or []
        ]
        predicted = data.get("predicted")
        return cls(
            input=str(data.get("input", "")),
            targets=targets,
            predicted=TargetRecord(
                predicted["class_index"], predicted.get("class_name"), predicted.get("score")
            )
            if isinstance(predicted, dict)
            else None,
            facts={k: v for k, v in data.items() if k not in known},
            metrics=dict(data.get("metrics") or {}),
            check=data.get("check"),
            label=data.get("label"),
            notes=list(data.get("notes") or []),
            error=data.get("error"),
            source=data.get("source"),
        )


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None


@dataclass
class Summary:
    """Accumulates per-input records and renders them at the end of a run."""

    method: str
    output_dir: Path
    run: str | None = None  # the run's name (default: the method); see run_summary_name
    model: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    inputs_found: int | None = None  # None: as many as there are records
    seconds: float = 0.0
    interrupted: bool = False
    terminated: bool = False  # stopped by SIGTERM (implies interrupted)
    check: dict[str, Any] | None = None  # set-level verdict of `cnnvis check`
    extra: dict[str, Any] = field(default_factory=dict)  # more top-level fields

    def add(self, record: Record) -> None:
        self.records.append(record)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if not r.ok)

    @property
    def processed(self) -> int:
        return len(self.records) - self.failed

    @property
    def inputs(self) -> int:
        return max(self.inputs_found or 0, len(self.records))

    def _counts(self, pick: str) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for record in self.records:
            target = record.primary if pick == "explained" else record.predicted
            if record.ok and target is not None:
                counts[target.class_name or str(target.class_index)] += 1
        return dict(counts.most_common())

    def class_counts(self) -> dict[str, int]:
        """How often each class was explained (the primary target)."""
        return self._counts("explained")

    def predicted_counts(self) -> dict[str, int]:
        """How often the model predicted each class (its own top-1)."""
        return self._counts("predicted")

    def metric_means(self) -> dict[str, float | None]:
        """Mean of each per-image metric (and IG's completeness gap) over processed inputs."""
        values: dict[str, list[float]] = {}
        for record in self.records:
            figures = dict(record.metrics)
            gaps = record.facts.get("completeness_gap")
            if isinstance(gaps, list) and gaps and gaps[0] is not None:
                figures["completeness_gap"] = gaps[0]
            for name, value in figures.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    values.setdefault(name, []).append(float(value))
        return {name: _mean(numbers) for name, numbers in values.items()}

    def to_dict(self) -> dict[str, Any]:
        totals: dict[str, Any] = {
            "inputs": self.inputs,
            "processed": self.processed,
            "failed": self.failed,
            "not_processed": self.inputs - len(self.records),
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.processed / self.seconds, 3)
            if self.seconds > 0
            else None,
            "classes": self.class_counts(),
            "predicted_classes": self.predicted_counts(),
            "interrupted": self.interrupted,
        }
        means = self.metric_means()
        if means:
            totals["metrics"] = means
        labelled = [r for r in self.records if r.ok and r.label is not None]
        if labelled:
            totals["labelled"] = len(labelled)
            totals["misclassified"] = sum(1 for r in labelled if not r.label["correct"])
        return {
            "version": SUMMARY_VERSION,
            "tool": {"name": "cnnvis", "version": __version__},
            "model": self.model,
            "method": self.method,
            "run": self.run_name,
            "params": self.params,
            **self.extra,
            "output_dir": str(self.output_dir),
            "results": [r.to_json() for r in self.records],
            **({"check": self.check} if self.check is not None else {}),
            "totals": totals,
        }

    def to_json(self) -> str:
        return strict_json(self.to_dict())

    @property
    def run_name(self) -> str:
        return self.run or self.method

    def write(self, path: Path | None = None) -> Path:
        """Write ``summary.json`` atomically (or to ``path``); into the output folder, also
        ``summary-<run>.json``, and ``summary.json`` lists every run's file as ``runs``."""
        if path is not None:
            write_text(path, self.to_json() + "\n")
            return path
        own = self.output_dir / run_summary_name(self.run_name)
        write_text(own, self.to_json() + "\n")
        runs = {name: file.name for name, file in run_summaries(self.output_dir).items()}
        latest = {**self.to_dict(), "runs": runs}
        path = self.output_dir / SUMMARY_NAME
        write_text(path, strict_json(latest) + "\n")
        return path

    def exit_code(self) -> int:
        """143 terminated, 130 interrupted, 3 a failed check, 1 some inputs failed, else 0."""
        if self.terminated:
            return EXIT_TERMINATED
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.check is not None and not self.check["passed"]:
            return EXIT_CHECK_FAILED
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    def print_table(self, console: Console, title: str | None = None) -> None:
        """The closing table: images, failures, classes, metrics, output folder, seconds."""
        table = Table(
            title=title or f"cnnvis {self.method}", show_header=False, title_justify="left"
        )
        table.add_column(style="bold")
        table.add_column()
        images = f"{self.processed} processed of {self.inputs}"
        missing = self.inputs - len(self.records)
        if missing:
            images += f" ({len(self.records)} done, {missing} not reached)"
        table.add_row("images", images)
        table.add_row("failures", f"[red]{self.failed}[/red]" if self.failed else "0")
        explained, predicted = self.class_counts(), self.predicted_counts()
        if explained == predicted:
            table.add_row("classes found", _counts_text(explained))
        else:
            table.add_row("explained", _counts_text(explained))
            table.add_row("predicted", _counts_text(predicted))
        labelled = [r for r in self.records if r.ok and r.label is not None]
        if labelled:
            wrong = [r for r in labelled if not r.label["correct"]]
            text = f"{len(labelled) - len(wrong)} of {len(labelled)} classified as labelled"
            if wrong:
                names = ", ".join(Path(r.input).name for r in wrong[:5])
                more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
                text += f"; [red]misclassified[/red]: {escape(printable(names + more))}"
            table.add_row("labels", text)
        for name, mean in self.metric_means().items():
            table.add_row(f"mean {name.replace('_', ' ')}", "-" if mean is None else f"{mean:.4f}")
        table.add_row("output folder", escape(printable(self.output_dir)))
        rate = f" ({self.processed / self.seconds:.1f} images/s)" if self.seconds > 0 else ""
        table.add_row("seconds", f"{self.seconds:.1f}{rate}")
        if self.check is not None:
            verdict = "[green]passed[/green]" if self.check["passed"] else "[red]FAILED[/red]"
            accuracy = ""
            if self.check.get("accuracy") is not None:
                accuracy = (
                    f", accuracy {self.check['accuracy']:.2f} (min {self.check['min_accuracy']})"
                )
            table.add_row(
                "check",
                f"{verdict}: mean energy {self.check['mean_energy']:.2f} "
                f"(min {self.check['min_energy']}), hit rate {self.check['hit_rate']:.2f} "
                f"(min {self.check['min_hit_rate']}){accuracy} over {self.check['images']} "
                "image(s)",
            )
        if self.interrupted:
            table.add_row("status", "[yellow]interrupted[/yellow]")
        console.print(table)


def _counts_text(counts: dict[str, int]) -> str:
    return escape(printable(", ".join(f"{name} x{n}" for name, n in counts.items()))) or "-"

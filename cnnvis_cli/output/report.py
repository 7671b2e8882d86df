"""A self-contained HTML gallery of a run: ``index.html`` beside the overlays.

The page is built from the run summary (see ``summary.py``): a header with the method, the model,
the totals and — for ``cnnvis check`` — the verdict, then one card per input with the input
image, the overlay of every explained target, the predicted class and score (and the expected
class with ``--labels``), the region-check figures and the faithfulness metrics when the run
computed them. Failed inputs get a card that shows their error. A ``compare`` run's cards are
one panel wide (the panel already holds the input).

The HTML, CSS and script are templates shipped with the package (``output/templates/``),
rendered by Jinja2 with autoescaping on: every value put into the page is HTML-escaped unless
the code marks it safe, which it never does.

The folder is self-contained and works offline from ``file://``: CSS and the small sorting
script are inline, there are no external fonts or scripts, and every link is *relative* to the
report's folder and points inside it: overlays and raw maps are written there, and the inputs are
shown as downscaled JPEG copies in ``OUT/thumbs/`` (made here, and reused while newer than their
input), so the folder can be copied or uploaded as a CI artifact and still shows every picture.
Relative paths in the summary are taken relative to the current working directory, as the runner
writes them.

Several runs into one folder (see ``summary.py``): each run's page is ``report-<run>.html``;
``index.html`` is the latest run's, and every page links the others (re-rendered from their
``summary-<run>.json`` each time a report is written).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np

from cnnvis_cli.output.files import atomic_write, write_text

REPORT_NAME = "index.html"
RUN_PAGE = "report-{run}.html"
THUMBS = "thumbs"
THUMB_SIDE = 480  # long side of an input's thumbnail, pixels
THUMB_QUALITY = 85

# Formats a browser displays in <img>; other files (e.g. TIFF) get a link instead.
BROWSER_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg", ".avif")


def _metric_keys() -> dict[str, Any]:
    from cnnvis_cli.evaluation.metrics import KEYS

    return KEYS


METRIC_LABELS = {key: info.label for key, info in _metric_keys().items()}
# Sort direction that puts the best first: a low deletion AUC is good, a high insertion AUC is.
METRIC_BEST_FIRST = {
    key: "asc" if info.better == "lower" else "desc" for key, info in _metric_keys().items()
}
METRIC_HINTS = {
    key: f"{info.better} is better: {info.hint}" for key, info in _metric_keys().items()
}


def _number(value: Any) -> float | None:
    """A finite float, or None for missing / non-numeric / NaN values (bools are not numbers)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(value: Any, digits: int = 4) -> str:
    number = _number(value)
    if number is None:
        return "\u2013"  # en dash
    if number != 0 and abs(number) < 10 ** (-digits + 1):
        return f"{number:.2e}"
    return f"{number:.{digits}f}"


def _link(path: str | os.PathLike[str], out_dir: Path) -> str:
    """A URL-quoted link to ``path`` relative to ``out_dir`` (a file: URI across drives)."""
    try:
        rel = os.path.relpath(path, out_dir)
    except ValueError:  # Windows: another drive, no relative path exists
        return Path(path).resolve().as_uri()
    return quote(Path(rel).as_posix(), safe="/", errors="surrogateescape")  # the name's bytes


def _slug(key: str) -> str:
    """A metric key made safe for a ``data-sort-*`` attribute name."""
    return re.sub(r"[^a-z0-9_-]", "_", str(key).lower())


def _class_label(name: Any, index: Any) -> str:
    if name not in (None, ""):
        return str(name)
    return f"class {index}" if index is not None else "?"


def thumbnail_path(source: str | Path, out_dir: Path) -> Path:
    """Where an input's thumbnail goes: ``out_dir/thumbs/<stem>-<hash>.jpg``, the hash of the
    input's path as the summary records it (two ``a.png`` in different folders get two
    thumbnails, and the name does not depend on the working directory)."""
    spelled = str(source).encode("utf-8", "surrogateescape")
    digest = hashlib.sha1(spelled).hexdigest()[:10]
    stem = re.sub(r"[^\w.-]", "_", Path(source).stem)[:60] or "input"
    return out_dir / THUMBS / f"{stem}-{digest}.jpg"


def write_thumbnail(rgb: np.ndarray, target: Path) -> None:
    """A JPEG copy of an RGB image, its long side at most ``THUMB_SIDE`` pixels."""
    height, width = rgb.shape[:2]
    factor = THUMB_SIDE / max(height, width)
    if factor < 1:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, THUMB_QUALITY])
    if not ok:
        raise OSError(f"JPEG encoding failed for {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data.tobytes())


def thumbnail(source: Path, out_dir: Path) -> Path | None:
    """The input's thumbnail in ``out_dir/thumbs/`` (None if the input cannot be read): the
    one the run wrote while the image was decoded, or made now; reused while newer than the
    input."""
    from cnnvis_cli.core.decode import decode_image
    from cnnvis_cli.errors import InputError

    target = thumbnail_path(source, out_dir)
    try:
        modified = source.stat().st_mtime
        if target.is_file() and target.stat().st_mtime >= modified:
            return target
        write_thumbnail(decode_image(source), target)
    except (InputError, OSError):
        return None
    return target


class _Page:
    """The template context of one run's page."""

    def __init__(self, summary: dict[str, Any], out_dir: Path, runs: list[dict[str, Any]]):
        self.summary = summary
        self.out_dir = out_dir
        self.runs = runs
        self.results: list[dict[str, Any]] = list(summary.get("results") or [])
        metric_keys: dict[str, None] = {}
        for result in self.results:
            for key, value in (result.get("metrics") or {}).items():
                if _number(value) is not None:
                    metric_keys[key] = None
        self.metric_keys = list(metric_keys)
        self.has_energy = any(
            _number((r.get("check") or {}).get("energy")) is not None for r in self.results
        )
        self.wide = summary.get("method") == "compare"

    # -- pieces -------------------------------------------------------------------------------

    def picture(self, path: Any, caption: str, alt: str) -> dict[str, Any] | None:
        """A linked picture, or a placeholder when the file is missing or not displayable."""
        if not path:
            return None
        file = Path(str(path))
        entry = {"caption": caption, "alt": alt, "href": _link(file, self.out_dir)}
        if not file.is_file():
            return {**entry, "state": "missing", "reason": "file not found", "name": file.name}
        if file.suffix.lower() not in BROWSER_IMAGE_SUFFIXES:
            return {**entry, "state": "link", "format": file.suffix.lstrip(".").upper()}
        return {**entry, "state": "image"}

    def input_picture(self, source: str, name: str) -> dict[str, Any]:
        thumb = thumbnail(Path(source), self.out_dir) if source else None
        if thumb is None:
            return {
                "caption": "input",
                "state": "missing",
                "reason": "input not readable",
                "name": name,
            }
        return self.picture(thumb, "input", f"input {name}")  # type: ignore[return-value]

    def facts(self) -> list[tuple[str, Any]]:
        model = self.summary.get("model") or {}
        totals = self.summary.get("totals") or {}
        failed_count = sum(1 for r in self.results if r.get("error"))
        inputs = totals.get("inputs", len(self.results))
        failed = totals.get("failed", failed_count)
        processed = totals.get("processed", len(self.results) - failed_count)
        model_name = model.get("name") or model.get("source") or "?"
        facts: list[tuple[str, Any]] = [
            ("method", self.summary.get("method") or "?"),
            ("model", model_name),
            ("images", f"{processed} of {inputs} processed"),
            ("failures", failed),
        ]
        if model.get("source") and model.get("source") != model_name:
            facts.insert(2, ("source", model["source"]))
        seconds = _number(totals.get("seconds"))
        if seconds is not None:
            rate = _number(totals.get("images_per_second"))
            facts.append(("seconds", f"{seconds:.1f}" + (f" ({rate:.1f}/s)" if rate else "")))
        if totals.get("labelled"):
            right = totals["labelled"] - totals.get("misclassified", 0)
            facts.append(("labels", f"{right} of {totals['labelled']} correct"))
        for key in self.metric_keys:
            values = [
                v
                for r in self.results
                if (v := _number((r.get("metrics") or {}).get(key))) is not None
            ]
            if values:
                facts.append(
                    (f"mean {METRIC_LABELS.get(key, key)}", _fmt(sum(values) / len(values), 4))
                )
        return facts

    def verdict(self) -> dict[str, Any] | None:
        check = self.summary.get("check")
        if not isinstance(check, dict):
            return None
        parts = []
        for key, label, limit_key in (
            ("mean_energy", "mean energy", "min_energy"),
            ("hit_rate", "hit rate", "min_hit_rate"),
            ("accuracy", "accuracy", "min_accuracy"),
        ):
            if _number(check.get(key)) is not None:
                limit = check.get(limit_key)
                parts.append(
                    f"{label} {_fmt(check[key], 3)}"
                    + (f" (min {_fmt(limit, 2)})" if _number(limit) is not None else "")
                )
        if check.get("images") is not None:
            parts.append(f"over {check['images']} image(s)")
        return {"passed": bool(check.get("passed")), "parts": parts}

    def params(self) -> list[tuple[str, Any]]:
        params = self.summary.get("params")
        if not isinstance(params, dict):
            return []
        return [(k, v) for k, v in params.items() if v is not None]

    def sort_options(self) -> list[dict[str, str]]:
        options = [("index", "input order", "asc"), ("name", "file name", "asc")]
        if any(_number(r.get("score")) is not None for r in self.results):
            options.insert(1, ("score", "score", "desc"))
        options += [
            (
                _slug(key),
                METRIC_LABELS.get(key, key.replace("_", " ")),
                METRIC_BEST_FIRST.get(key, "desc"),
            )
            for key in self.metric_keys
        ]
        if self.has_energy:
            options.append(("energy", "check energy", "desc"))
        return [{"key": k, "label": label, "dir": d} for k, label, d in options]

    def card(self, index: int, result: dict[str, Any]) -> dict[str, Any]:
        source = str(result.get("input") or "")
        name = Path(source).name or source or f"input {index + 1}"
        error = result.get("error")
        sort = {"index": str(index), "name": name.lower()}
        score = _number(result.get("score"))
        if not error and score is not None:
            sort["score"] = repr(score)
        metrics = result.get("metrics") or {}
        for key in self.metric_keys:
            if (value := _number(metrics.get(key))) is not None:
                sort[_slug(key)] = repr(value)
        check = result.get("check") or {}
        if (energy := _number(check.get("energy"))) is not None:
            sort["energy"] = repr(energy)

        pictures = []
        targets = result.get("targets") or []
        outputs = result.get("outputs") or {}
        if not error and not targets and (outputs.get("overlay") or outputs.get("grid")):
            targets = [result]  # no per-target records: the primary overlay only
        if not error and not self.wide:
            pictures.append(self.input_picture(source, name))
        for rank, target in enumerate(targets):
            label = _class_label(target.get("class_name"), target.get("class_index"))
            prefix = f"#{rank + 1} " if len(targets) > 1 else ""
            caption = f"{prefix}{label} · {_fmt(target.get('score'))}"
            outputs = target.get("outputs") or {}
            overlay = outputs.get("overlay") or outputs.get("grid")  # grid: `cnnvis sanity`
            pictures.append(self.picture(overlay, caption, f"overlay {name}: {label}"))

        states = ["failed"] if error else []
        if check.get("passed") is False:
            states.append("check-failed")
        expected = None
        label_record = result.get("label")
        if not error and isinstance(label_record, dict):
            predicted = result.get("predicted") or {}
            expected = {
                "name": _class_label(
                    label_record.get("class_name"), label_record.get("class_index")
                ),
                "correct": bool(label_record.get("correct")),
                "predicted": _class_label(
                    predicted.get("class_name"), predicted.get("class_index")
                ),
            }
            if not expected["correct"]:
                states.append("misclassified")
        show_index = result.get("class_index") is not None and result.get("class_name")
        return {
            "index": index,
            "name": name,
            "source": source,
            "sort": [(_slug(k), v) for k, v in sort.items()],
            "states": states,
            "pictures": [p for p in pictures if p is not None],
            "error": error,
            "label": _class_label(result.get("class_name"), result.get("class_index")),
            "class_index": result.get("class_index") if show_index else None,
            "score": _fmt(score),
            "expected": expected,
            "figures": self.figures(check, metrics),
            "skipped": check.get("skipped"),
            "files": self.files(result) if not error else [],
        }

    def figures(self, check: dict[str, Any], metrics: dict[str, Any]) -> list[dict[str, str]]:
        items = []
        if check and not check.get("skipped"):
            if _number(check.get("energy")) is not None:
                items.append(("energy", _fmt(check["energy"], 3), "heat inside the region", ""))
            if "hit" in check:
                items.append(
                    (
                        "pointing",
                        "hit" if check["hit"] else "miss",
                        "peak inside the region",
                        "good" if check["hit"] else "bad",
                    )
                )
            if "passed" in check:
                items.append(
                    (
                        "check",
                        "pass" if check["passed"] else "fail",
                        check.get("reason") or "",
                        "good" if check["passed"] else "bad",
                    )
                )
        for key in self.metric_keys:
            if _number(metrics.get(key)) is not None:
                label = METRIC_LABELS.get(key, key.replace("_", " "))
                items.append((label, _fmt(metrics[key], 4), METRIC_HINTS.get(key, ""), ""))
        return [
            {"label": label, "value": value, "hint": hint, "cls": cls}
            for label, value, hint, cls in items
        ]

    def files(self, result: dict[str, Any]) -> list[dict[str, str]]:
        """Links to the non-image outputs (raw .npy maps) of every target."""
        links = []
        for record in result.get("targets") or [result]:
            for kind, path in (record.get("outputs") or {}).items():
                if kind in ("overlay", "grid") or not path or not Path(str(path)).is_file():
                    continue
                links.append(
                    {"href": _link(Path(str(path)), self.out_dir), "name": Path(str(path)).name}
                )
        return links

    # -- page ---------------------------------------------------------------------------------

    def context(self) -> dict[str, Any]:
        summary = self.summary
        model = summary.get("model") or {}
        totals = summary.get("totals") or {}
        tool = summary.get("tool") or {}
        failed = totals.get("failed", sum(1 for r in self.results if r.get("error")))
        return {
            "title": summary.get("title") or summary.get("method") or "run",
            "model_name": model.get("name") or model.get("source") or "?",
            "version": f" {tool['version']}" if tool.get("version") else "",
            "interrupted": bool(totals.get("interrupted")),
            "failed": failed,
            "misclassified": totals.get("misclassified") or 0,
            "facts": self.facts(),
            "verdict": self.verdict(),
            "sanity": sanity_section_data(summary, self.out_dir),
            "params": self.params(),
            "runs": self.runs,
            "sort_options": self.sort_options(),
            "cards": [self.card(i, r) for i, r in enumerate(self.results)],
            "wide": self.wide,
        }


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(
        loader=PackageLoader("cnnvis_cli", "output/templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render_page(summary: dict[str, Any], out_dir: Path, runs: list[dict[str, Any]] | None = None):
    """The HTML text of one run's page (``runs``: the folder's runs, for the links between
    them: ``{"name", "href", "current"}``)."""
    page = _Page(summary, Path(out_dir), runs or [])
    return _environment().get_template("page.html.j2").render(page=page.context())


def run_name(summary: dict[str, Any]) -> str:
    """A summary's run name (``summary-<run>.json``), made safe for a file name."""
    name = str(summary.get("run") or summary.get("method") or "run")
    return re.sub(r"[^\w.-]", "_", name) or "run"


def sanity_section_data(summary: dict[str, Any], out_dir: Path) -> dict[str, Any] | None:
    """What the report shows of a ``cnnvis sanity`` run (None for other runs): the verdict, the
    plot's link and a row per method with the verdict statistic at every step."""
    from cnnvis_cli.evaluation.similarity import MEASURE_LABELS

    sanity = summary.get("sanity")
    if not isinstance(sanity, dict) or not isinstance(sanity.get("verdict"), dict):
        return None
    verdict = sanity["verdict"]
    statistic = verdict.get("statistic") or "spearman_abs"
    plot = sanity.get("plot")
    rows = []
    for method, result in (verdict.get("methods") or {}).items():
        curve = (sanity.get("methods") or {}).get(method) or {}
        values = ((curve.get("mean") or {}).get(statistic)) or []
        rows.append(
            {
                "method": method,
                "title": curve.get("title") or method,
                "values": [f"{n:.2f}" if (n := _number(v)) is not None else "-" for v in values],
                "passed": result.get("passed"),
            }
        )
    return {
        "test": sanity.get("test") or "cascading",
        "passed": verdict.get("passed"),
        "statistic": MEASURE_LABELS.get(statistic, statistic),
        "step": verdict.get("step"),
        "threshold": verdict.get("max_similarity"),
        "images": verdict.get("images"),
        "columns": [str(step.get("label")) for step in sanity.get("steps") or []],
        "rows": rows,
        "plot": _link(plot, out_dir) if plot and Path(str(plot)).is_file() else None,
    }


def write_report(summary: dict[str, Any], out_dir: Path) -> Path:
    """Write the run's page to ``out_dir / "index.html"`` and ``report-<run>.html``
    (atomically), re-render the pages of the other runs in the folder so they link each other,
    and return the path of ``index.html``.

    ``summary`` is the dict of ``Summary.to_dict()`` (or a loaded ``summary.json``); per-result
    ``"check"`` / ``"metrics"`` / ``"label"`` and the top-level ``"check"`` verdict are shown
    when present. Paths in it that are relative are taken relative to the current working
    directory.
    """
    from cnnvis_cli.output.summary import run_summaries

    out_dir = Path(out_dir)
    current = run_name(summary)
    others: dict[str, dict[str, Any]] = {}
    for name, path in run_summaries(out_dir).items():
        if name == current:
            continue
        try:
            others[name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a damaged earlier summary loses its page, not this run's
    names = sorted({current, *others})

    def links(shown: str) -> list[dict[str, Any]]:
        return [{"name": n, "href": RUN_PAGE.format(run=n), "current": n == shown} for n in names]

    text = render_page(summary, out_dir, links(current))
    write_text(out_dir / RUN_PAGE.format(run=current), text)
    for name, other in others.items():
        write_text(out_dir / RUN_PAGE.format(run=name), render_page(other, out_dir, links(name)))
    path = out_dir / REPORT_NAME
    write_text(path, text)
    return path

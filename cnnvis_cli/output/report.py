"""A self-contained HTML gallery of a run: ``index.html`` beside the overlays.

The page is built from the run summary (see ``summary.py``): a header with the method, the model,
the totals and — for ``cnnvis check`` — the verdict, then one card per input with the input
image, the overlay of every explained target, the predicted class and score, the region-check
figures and the faithfulness metrics when the run computed them. Failed inputs get a card that
shows their error.

The page works offline from ``file://``: CSS and the small sorting script are inline, there are no
external fonts, scripts or images, and every picture is a *relative* link from the report's
folder to the file (``os.path.relpath``, URL-quoted so spaces and non-ASCII names work). Relative
paths in the summary are taken relative to the current working directory, as the runner writes
them. Every piece of text is HTML-escaped.
"""

from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cnnvis_cli.output.files import write_text

REPORT_NAME = "index.html"

# Formats a browser displays in <img>; other inputs (e.g. TIFF) get a link instead.
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


def _e(value: Any) -> str:
    """HTML-escape any value's text (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


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


class _Page:
    """Collects the HTML of one report."""

    def __init__(self, summary: dict[str, Any], out_dir: Path) -> None:
        self.summary = summary
        self.out_dir = out_dir
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

    # -- pieces -------------------------------------------------------------------------------

    def picture(self, path: Any, caption: str, alt: str) -> str:
        """A linked thumbnail, or a placeholder when the file is missing or not displayable."""
        if not path:
            return ""
        file = Path(str(path))
        href = _link(file, self.out_dir)
        if not file.is_file():
            body = f'<div class="missing">file not found<br><code>{_e(file.name)}</code></div>'
        elif file.suffix.lower() not in BROWSER_IMAGE_SUFFIXES:
            body = (
                f'<a class="missing" href="{_e(href)}">{_e(file.suffix.lstrip(".").upper())} '
                "file<br>(open)</a>"
            )
        else:
            body = f'<a href="{_e(href)}"><img src="{_e(href)}" alt="{_e(alt)}" loading="lazy"></a>'
        return f"<figure>{body}<figcaption>{_e(caption)}</figcaption></figure>"

    def header(self) -> str:
        summary = self.summary
        model = summary.get("model") or {}
        totals = summary.get("totals") or {}
        failed_count = sum(1 for r in self.results if r.get("error"))
        inputs = totals.get("inputs", len(self.results))
        failed = totals.get("failed", failed_count)
        processed = totals.get("processed", len(self.results) - failed_count)
        method = summary.get("method") or "?"
        model_name = model.get("name") or model.get("source") or "?"
        facts = [
            ("method", method),
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
        items = "".join(
            f'<div class="fact"><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>' for k, v in facts
        )
        flags = ""
        if totals.get("interrupted"):
            flags += '<span class="badge warn">interrupted</span>'
        if failed:
            flags += f'<span class="badge bad">{_e(failed)} failed</span>'
        tool = summary.get("tool") or {}
        version = f" {tool['version']}" if tool.get("version") else ""
        return (
            '<header class="top">'
            f"<h1>cnnvis <span>{_e(method)}</span></h1>"
            f'<p class="sub">{_e(model_name)} · cnnvis{_e(version)} {flags}</p>'
            f'<dl class="facts">{items}</dl>'
            f"{self.verdict()}{sanity_section(self.summary, self.out_dir)}{self.params()}"
            "</header>"
        )

    def verdict(self) -> str:
        check = self.summary.get("check")
        if not isinstance(check, dict):
            return ""
        passed = bool(check.get("passed"))
        parts = []
        if _number(check.get("mean_energy")) is not None:
            limit = check.get("min_energy")
            parts.append(
                f"mean energy {_fmt(check['mean_energy'], 3)}"
                + (f" (min {_fmt(limit, 2)})" if _number(limit) is not None else "")
            )
        if _number(check.get("hit_rate")) is not None:
            limit = check.get("min_hit_rate")
            parts.append(
                f"hit rate {_fmt(check['hit_rate'], 3)}"
                + (f" (min {_fmt(limit, 2)})" if _number(limit) is not None else "")
            )
        if check.get("images") is not None:
            parts.append(f"over {check['images']} image(s)")
        state = "good" if passed else "bad"
        word = "passed" if passed else "FAILED"
        return (
            f'<div class="verdict {state}"><strong>check {word}</strong>'
            f"<span>{_e(' · '.join(parts))}</span></div>"
        )

    def params(self) -> str:
        params = self.summary.get("params")
        if not isinstance(params, dict) or not params:
            return ""
        rows = "".join(
            f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>"
            for k, v in params.items()
            if v is not None
        )
        return f'<details class="params"><summary>parameters</summary><dl>{rows}</dl></details>'

    def controls(self) -> str:
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
        rendered = "".join(
            f'<option value="{_e(k)}" data-dir="{_e(d)}">{_e(label)}</option>'
            for k, label, d in options
        )
        return (
            '<div class="controls"><label for="sort-key">sort by</label>'
            f'<select id="sort-key">{rendered}</select>'
            '<button id="sort-order" type="button" title="reverse the order">ascending</button>'
            f'<span class="count">{len(self.results)} card(s)</span></div>'
        )

    def card(self, index: int, result: dict[str, Any]) -> str:
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
        attrs = "".join(f' data-sort-{_e(k)}="{_e(v)}"' for k, v in sort.items())

        thumbs = [] if error else [self.picture(source, "input", f"input {name}")]
        targets = result.get("targets") or []
        if not error and not targets and (result.get("outputs") or {}).get("overlay"):
            targets = [result]  # no per-target records: the primary overlay only
        for rank, target in enumerate(targets):
            label = _class_label(target.get("class_name"), target.get("class_index"))
            prefix = f"#{rank + 1} " if len(targets) > 1 else ""
            caption = f"{prefix}{label} · {_fmt(target.get('score'))}"
            outputs = target.get("outputs") or {}
            overlay = outputs.get("overlay") or outputs.get("grid")  # grid: `cnnvis sanity`
            thumbs.append(self.picture(overlay, caption, f"overlay {name}: {label}"))

        body = [f'<h2 title="{_e(source)}">{_e(name)}</h2>']
        if error:
            body.append(f'<p class="error"><strong>failed:</strong> {_e(error)}</p>')
        else:
            label = _class_label(result.get("class_name"), result.get("class_index"))
            index_text = (
                f' <span class="muted">#{_e(result["class_index"])}</span>'
                if result.get("class_index") is not None and result.get("class_name")
                else ""
            )
            body.append(
                f'<p class="pred"><span class="cls">{_e(label)}</span>{index_text}'
                f'<span class="score" title="model output">{_e(_fmt(score))}</span></p>'
            )
            figures = self.figures(check, metrics)
            if figures:
                body.append(f'<dl class="figs">{figures}</dl>')
            if check.get("skipped"):
                body.append(f'<p class="note">check skipped: {_e(check["skipped"])}</p>')
            files = self.files(result)
            if files:
                body.append(f'<p class="files">{files}</p>')
        state = " failed" if error else ""
        if check.get("passed") is False:
            state += " check-failed"
        return (
            f'<article class="card{state}" id="r{index}"{attrs}>'
            + (f'<div class="thumbs">{"".join(thumbs)}</div>' if thumbs else "")
            + f'<div class="body">{"".join(body)}</div></article>'
        )

    def figures(self, check: dict[str, Any], metrics: dict[str, Any]) -> str:
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
                        "",
                        "good" if check["passed"] else "bad",
                    )
                )
        for key in self.metric_keys:
            if _number(metrics.get(key)) is not None:
                label = METRIC_LABELS.get(key, key.replace("_", " "))
                items.append((label, _fmt(metrics[key], 4), METRIC_HINTS.get(key, ""), ""))
        return "".join(
            f'<div title="{_e(hint)}"><dt>{_e(label)}</dt>'
            f'<dd class="{_e(cls)}">{_e(value)}</dd></div>'
            for label, value, hint, cls in items
        )

    def files(self, result: dict[str, Any]) -> str:
        """Links to the non-image outputs (raw .npy maps) of every target."""
        links = []
        records = result.get("targets") or [result]
        for record in records:
            for kind, path in (record.get("outputs") or {}).items():
                if kind in ("overlay", "grid") or not path or not Path(str(path)).is_file():
                    continue
                href = _link(Path(str(path)), self.out_dir)
                links.append(f'<a href="{_e(href)}">{_e(Path(str(path)).name)}</a>')
        return " ".join(links)

    # -- page ---------------------------------------------------------------------------------

    def render(self) -> str:
        method = self.summary.get("method") or "run"
        cards = "".join(self.card(i, r) for i, r in enumerate(self.results))
        if not self.results:
            cards = '<p class="empty">No inputs in this run.</p>'
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>cnnvis report · {_e(method)}</title>"
            f"<style>{CSS}</style></head><body>"
            f"{self.header()}<main>{self.controls()}"
            f'<section id="grid" class="grid">{cards}</section></main>'
            f"<script>{SCRIPT}</script></body></html>\n"
        )


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
                "values": [_fmt(v, 2) for v in values],
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


def sanity_section(summary: dict[str, Any], out_dir: Path) -> str:
    """The HTML fragment of :func:`sanity_section_data` (empty for other runs)."""
    data = sanity_section_data(summary, out_dir)
    if data is None:
        return ""
    state = {True: ("good", "passed"), False: ("bad", "FAILED")}.get(data["passed"], ("", "-"))
    head = "".join(f"<th>{_e(c)}</th>" for c in data["columns"])
    body = ""
    for row in data["rows"]:
        word = {True: "passed", False: "FAILED"}.get(row["passed"], "-")
        cls = {True: "good", False: "bad"}.get(row["passed"], "muted")
        cells = "".join(f"<td>{_e(v)}</td>" for v in row["values"])
        body += (
            f'<tr><th scope="row">{_e(row["title"])}</th>{cells}'
            f'<td class="{cls}">{_e(word)}</td></tr>'
        )
    plot = (
        f'<a href="{_e(data["plot"])}"><img src="{_e(data["plot"])}" alt="similarity plot"></a>'
        if data["plot"]
        else ""
    )
    return (
        f'<section class="sanity"><div class="verdict {state[0]}"><strong>sanity {state[1]}'
        f"</strong><span>{_e(data['test'])} randomisation · {_e(data['statistic'])} to the "
        f"trained model's map, mean over {_e(data['images'])} image(s) · passes below "
        f"{_e(data['threshold'])} after re-initialising {_e(data['step'])}</span></div>"
        f'<div class="sanity-body">{plot}<table><thead><tr><th>method</th>{head}<th>verdict</th>'
        f"</tr></thead><tbody>{body}</tbody></table></div></section>"
    )


def write_report(summary: dict[str, Any], out_dir: Path) -> Path:
    """Write ``out_dir / "index.html"`` (atomically) for a run summary; returns its path.

    ``summary`` is the dict of ``Summary.to_dict()`` (or a loaded ``summary.json``); per-result
    ``"check"`` / ``"metrics"`` and the top-level ``"check"`` verdict are shown when present.
    Paths in it that are relative are taken relative to the current working directory.
    """
    out_dir = Path(out_dir)
    path = out_dir / REPORT_NAME
    write_text(path, _Page(summary, out_dir).render())
    return path


CSS = """
:root{--bg:#f5f6f8;--card:#fff;--ink:#1d2330;--muted:#6b7383;--line:#e2e5ea;--accent:#2f6fde;
--good:#1b8a4b;--bad:#c9302c;--warn:#b7791f;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#15181d;--card:#1f242b;--ink:#e6e9ee;
--muted:#99a1ae;--line:#313843;--accent:#6ea0ff;--good:#3fbf73;--bad:#ff6b66;--warn:#e0a84a}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
header.top{padding:20px 28px 14px;background:var(--card);border-bottom:1px solid var(--line)}
h1{margin:0;font-size:22px;font-weight:650}h1 span{color:var(--accent)}
.sub{margin:2px 0 12px;color:var(--muted)}
dl{margin:0}dt{color:var(--muted);font-size:12px}dd{margin:0;font-weight:600}
.facts{display:flex;flex-wrap:wrap;gap:8px 28px}
.badge{display:inline-block;margin-left:6px;padding:0 8px;border-radius:10px;font-size:12px;
font-weight:600;color:#fff}
.badge.bad{background:var(--bad)}.badge.warn{background:var(--warn)}
.verdict{margin-top:14px;padding:10px 14px;border-radius:8px;display:flex;flex-wrap:wrap;
gap:4px 14px;align-items:baseline;border:1px solid}
.verdict strong{font-size:16px;text-transform:uppercase;letter-spacing:.03em}
.verdict.good{border-color:var(--good);color:var(--good)}
.verdict.bad{border-color:var(--bad);color:var(--bad)}
.verdict span{color:var(--ink)}
.params{margin-top:10px;color:var(--muted)}.params summary{cursor:pointer}
.params dl{display:flex;flex-wrap:wrap;gap:6px 22px;margin-top:6px}
.params dd{font-weight:500;color:var(--ink);word-break:break-all}
main{padding:16px 28px 40px}
.controls{display:flex;align-items:center;gap:8px;margin-bottom:14px;flex-wrap:wrap}
.controls label{color:var(--muted)}.controls .count{margin-left:auto;color:var(--muted)}
select,button{font:inherit;padding:4px 10px;border:1px solid var(--line);border-radius:6px;
background:var(--card);color:var(--ink)}
button{cursor:pointer}button:hover,select:hover{border-color:var(--accent)}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:16px;
align-items:start}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;overflow:hidden;
display:flex;flex-direction:column}
.card.failed{border-color:var(--bad)}.card.check-failed{box-shadow:inset 4px 0 0 var(--bad)}
.thumbs{display:flex;flex-wrap:wrap;gap:6px;padding:8px;background:rgba(127,127,127,.08)}
figure{margin:0;flex:1 1 140px;min-width:0}
figure img{display:block;width:100%;height:auto;max-height:320px;object-fit:contain;
border-radius:4px;background:#0001}
figcaption{font-size:12px;color:var(--muted);text-align:center;padding-top:2px;
white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.missing{display:flex;align-items:center;justify-content:center;flex-direction:column;
min-height:100px;border:1px dashed var(--line);border-radius:4px;color:var(--muted);
font-size:12px;text-align:center;padding:6px;word-break:break-all}
.body{padding:10px 12px 12px}
h2{margin:0 0 4px;font-size:15px;font-weight:600;overflow-wrap:anywhere}
.pred{margin:0;display:flex;align-items:baseline;gap:6px}
.cls{font-weight:600}.muted{color:var(--muted)}
.score{margin-left:auto;font-variant-numeric:tabular-nums;font-weight:600;color:var(--accent)}
.figs{display:flex;flex-wrap:wrap;gap:4px 18px;margin-top:8px;padding-top:8px;
border-top:1px solid var(--line)}
.figs dd{font-variant-numeric:tabular-nums}
dd.good{color:var(--good)}dd.bad{color:var(--bad)}dd.muted{color:var(--muted);font-weight:500}
.error{margin:6px 0 0;padding:8px 10px;border-radius:6px;background:rgba(201,48,44,.1);
color:var(--bad);overflow-wrap:anywhere}
.error strong{text-transform:uppercase;font-size:12px}
.note{margin:8px 0 0;font-size:12px;color:var(--muted)}
.files{margin:8px 0 0;font-size:12px}.files a{color:var(--accent);margin-right:8px}
.empty{color:var(--muted)}
.sanity-body{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start;margin-top:10px}
.sanity-body img{max-width:100%;width:760px;height:auto;border-radius:4px;background:#fff}
.sanity table{border-collapse:collapse;font-variant-numeric:tabular-nums}
.sanity th,.sanity td{padding:3px 8px;border-bottom:1px solid var(--line);text-align:right}
.sanity th[scope=row]{text-align:left}td.good{color:var(--good)}td.bad{color:var(--bad)}
"""

SCRIPT = """
(function () {
  var grid = document.getElementById("grid");
  var select = document.getElementById("sort-key");
  var button = document.getElementById("sort-order");
  if (!grid || !select || !button) return;
  var reversed = false;
  function order(card) { return Number(card.getAttribute("data-sort-index")); }
  function apply() {
    var key = select.value;
    var option = select.options[select.selectedIndex];
    var dir = option.getAttribute("data-dir") === "desc" ? -1 : 1;
    if (reversed) dir = -dir;
    var cards = Array.prototype.slice.call(grid.querySelectorAll("article.card"));
    cards.sort(function (a, b) {
      var va = a.getAttribute("data-sort-" + key), vb = b.getAttribute("data-sort-" + key);
      if (va === null || vb === null) {  // missing values (failed inputs) always go last
        if (va === null && vb === null) return order(a) - order(b);
        return va === null ? 1 : -1;
      }
      var na = Number(va), nb = Number(vb);
      var c = isNaN(na) || isNaN(nb) ? va.localeCompare(vb) : na - nb;
      return c !== 0 ? dir * c : order(a) - order(b);
    });
    cards.forEach(function (card) { grid.appendChild(card); });
    button.textContent = dir < 0 ? "descending \\u2193" : "ascending \\u2191";
  }
  select.addEventListener("change", function () { reversed = false; apply(); });
  button.addEventListener("click", function () { reversed = !reversed; apply(); });
  apply();
})();
"""

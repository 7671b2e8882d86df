"""``cnnvis merge``: one run from the outputs of its shards.

Each shard folder holds a ``summary.json`` (and the files it names). The merge refuses shards of
different runs — another model (by content hash), method, options, or gate thresholds — and
inputs that two shards both processed. It copies every output file into the merged folder at the
same relative place (hard links where the file system allows), rewrites the records' paths, and
recomputes the totals and, for ``cnnvis check``, the verdict from the per-image figures, so the
merged verdict, mean energy and hit rate equal those of one run over all images.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnvis_cli.core.shards import Shard
from cnnvis_cli.errors import CnnvisError
from cnnvis_cli.evaluation.check import verdict
from cnnvis_cli.output.files import TEMP_PREFIX
from cnnvis_cli.output.summary import SUMMARY_NAME, Record, Summary

GATE_KEYS = ("min_energy", "min_hit_rate", "tolerance")


@dataclass
class ShardRun:
    folder: Path
    data: dict[str, Any]

    @property
    def identity(self) -> tuple[Any, ...]:
        fingerprint = self.data.get("fingerprint") or {}
        gate = self.data.get("check") or {}
        return (
            fingerprint.get("model_sha256"),
            self.data.get("method"),
            json.dumps(self.data.get("params"), sort_keys=True),
            tuple(gate.get(key) for key in GATE_KEYS),
        )


def read_shard(folder: Path) -> ShardRun:
    path = folder / SUMMARY_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CnnvisError(
            f"{folder}: no {SUMMARY_NAME} in it; is it a cnnvis output folder?"
        ) from None
    except (OSError, ValueError) as exc:
        raise CnnvisError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(data, dict) or "results" not in data:
        raise CnnvisError(f"{path}: not a cnnvis summary")
    return ShardRun(folder, data)


def _check_compatible(runs: list[ShardRun]) -> list[str]:
    """Raise on shards of different runs; return notes (e.g. shards missing)."""
    first = runs[0]
    for run in runs[1:]:
        if run.identity != first.identity:
            what = ("model (content hash)", "method", "options", "gate thresholds")
            differing = [
                w for w, a, b in zip(what, first.identity, run.identity, strict=True) if a != b
            ]
            raise CnnvisError(
                f"{run.folder} and {first.folder} are different runs (their "
                f"{', '.join(differing)} differ); merge only the shards of one run"
            )
    notes = []
    shards = [run.data.get("shard") for run in runs]
    if all(shards):
        parsed = [Shard.parse(text) for text in shards]
        counts = {shard.count for shard in parsed}
        indices = [shard.index for shard in parsed]
        if len(counts) != 1 or len(set(indices)) != len(indices):
            raise CnnvisError(f"the shards {', '.join(shards)} do not partition one run")
        missing = sorted(set(range(counts.pop())) - set(indices))
        if missing:
            notes.append(f"shard(s) {', '.join(map(str, missing))} missing from the merge")
    return notes


def _place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        temporary = target.with_name(f"{TEMP_PREFIX}{target.name[:40]}.tmp")
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)


def _relocate(record: Record, run: ShardRun, out: Path) -> None:
    """Copy the record's files from the shard folder into ``out``; rewrite its paths."""
    written_to = Path(str(run.data.get("output_dir") or run.folder))
    for target in record.targets:
        for kind, path in list(target.outputs.items()):
            try:
                relative = Path(path).relative_to(written_to)
            except ValueError:
                relative = Path(Path(path).name)
            source = run.folder / relative
            if not source.is_file():
                raise CnnvisError(f"{run.folder}: {relative} is missing (named by its summary)")
            _place(source, out / relative)
            target.outputs[kind] = str(out / relative)


def merge_runs(folders: list[Path], out: Path) -> tuple[Summary, list[str]]:
    """The merged summary of the shard ``folders`` (outputs copied into ``out``) and notes."""
    runs = [read_shard(Path(folder)) for folder in folders]
    notes = _check_compatible(runs)
    first = runs[0].data
    summary = Summary(method=str(first.get("method")), output_dir=out, run=first.get("run"))
    summary.model = first.get("model") or {}
    summary.params = first.get("params") or {}
    summary.extra = {
        "fingerprint": first.get("fingerprint"),
        "merged_from": [str(f) for f in folders],
        **{key: first[key] for key in ("render", "title") if key in first},
    }
    seen: dict[str, Path] = {}
    found = 0
    for run in runs:
        totals = run.data.get("totals") or {}
        found += int(totals.get("inputs") or len(run.data["results"]))
        summary.seconds += float(totals.get("seconds") or 0.0)
        summary.interrupted |= bool(totals.get("interrupted"))
        for item in run.data["results"]:
            record = Record.from_json(item)
            if record.input in seen:
                raise CnnvisError(
                    f"{record.input} was processed by both {seen[record.input]} and {run.folder}"
                )
            seen[record.input] = run.folder
            if record.ok:
                _relocate(record, run, out)
            summary.add(record)
    summary.inputs_found = found
    summary.records.sort(key=lambda r: r.input)
    gate = first.get("check")
    if isinstance(gate, dict):
        processed = [r for r in summary.records if r.ok]
        summary.check = verdict(
            [r.check for r in processed],
            *(gate.get(key) for key in GATE_KEYS),
            [r.label for r in processed],
            gate.get("min_accuracy", 1.0),
        )
    with contextlib.suppress(KeyError):
        summary.extra["shards"] = [run.data["shard"] for run in runs]
    return summary, notes

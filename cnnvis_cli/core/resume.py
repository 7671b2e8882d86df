"""``--resume``: which inputs a previous run into the same output folder already finished.

A previous run counts when its fingerprint (model content hash, cnnvis/TensorFlow/Keras
versions), method, options and shard equal this run's; its finished records come from
``summary.json`` and from the journal a killed run leaves behind. An input is skipped when its
record succeeded, the file still has the size and modification time recorded, and every output
the record names still exists; everything else is done again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnvis_cli.core.discover import InputItem
from cnnvis_cli.errors import CnnvisError
from cnnvis_cli.output.journal import read_journal
from cnnvis_cli.output.summary import SUMMARY_NAME, Record


@dataclass(frozen=True)
class RunIdentity:
    """What must be equal for two runs' records to be interchangeable."""

    fingerprint: dict[str, Any]
    method: str
    params: dict[str, Any]
    shard: str | None

    def header(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "method": self.method,
            "params": self.params,
            "shard": self.shard,
        }

    def matches(self, other: dict[str, Any]) -> bool:
        mine = json.loads(json.dumps(self.header()))  # compare as JSON would round-trip
        return all(mine[key] == other.get(key) for key in mine)


def source_of(path: Path) -> dict[str, int]:
    """What identifies an input's content cheaply: its size and modification time."""
    info = os.stat(path)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}


def _previous(folder: Path) -> tuple[dict[str, Any] | None, list[Record]]:
    """The identity and records of the previous run: summary.json, then its journal."""
    header, records = read_journal(folder)
    if header is not None:
        return header, records
    try:
        summary = json.loads((folder / SUMMARY_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, []
    header = {
        "fingerprint": summary.get("fingerprint"),
        "method": summary.get("method"),
        "params": summary.get("params"),
        "shard": summary.get("shard"),
    }
    return header, [Record.from_json(item) for item in summary.get("results") or []]


def _still_valid(record: Record, item: InputItem) -> bool:
    if not record.ok or not record.targets:
        return False
    try:
        if record.source != source_of(item.path):
            return False
    except OSError:
        return False
    outputs = [path for target in record.targets for path in target.outputs.values()]
    return bool(outputs) and all(os.path.exists(path) for path in outputs)


def finished_records(
    folder: Path, identity: RunIdentity, items: list[InputItem]
) -> dict[str, Record]:
    """Records of ``items`` a previous matching run finished (by input path)."""
    header, records = _previous(folder)
    if header is None:
        return {}
    if not identity.matches(header):
        raise CnnvisError(
            f"--resume: the run already in {folder} used another model, method, options, shard "
            "or cnnvis/TensorFlow version; resume with the same ones, or choose another -o/--out"
        )
    by_input = {record.input: record for record in records}
    finished = {}
    for item in items:
        record = by_input.get(str(item.path))
        if record is not None and _still_valid(record, item):
            finished[str(item.path)] = record
    return finished

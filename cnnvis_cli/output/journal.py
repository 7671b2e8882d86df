"""The run journal: one line per finished input, so ``--resume`` survives even ``kill -9``.

``OUT/.cnnvis-journal.jsonl`` starts with a header line (the run's fingerprint, method, params
and shard) followed by one record per input whose outputs were written, appended and flushed as
each finishes. A run that ends normally (or on Ctrl-C/SIGTERM) writes ``summary.json`` and removes
the journal; after a ``kill -9`` the journal remains and ``--resume`` reads it. A torn last line
(killed mid-write) is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from cnnvis_cli.output.files import current_umask
from cnnvis_cli.output.summary import Record, strict_json

JOURNAL_NAME = ".cnnvis-journal.jsonl"


class Journal:
    """Appends finished records to ``folder/.cnnvis-journal.jsonl``."""

    def __init__(self, folder: Path, header: dict[str, Any]) -> None:
        self.path = folder / JOURNAL_NAME
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666 & ~current_umask())
        self._handle = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")
        self._write(header)

    def add(self, record: Record) -> None:
        self._write(record.to_json())

    def _write(self, data: dict[str, Any]) -> None:
        self._handle.write(strict_json(data, indent=None) + "\n")
        self._handle.flush()

    def close(self, *, remove: bool) -> None:
        self._handle.close()
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()


def read_journal(folder: Path) -> tuple[dict[str, Any] | None, list[Record]]:
    """The header and records of a journal left in ``folder`` (none: ``(None, [])``)."""
    path = folder / JOURNAL_NAME
    try:
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    except OSError:
        return None, []
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            break  # a torn last line
    if not parsed:
        return None, []
    return parsed[0], [Record.from_json(item) for item in parsed[1:]]

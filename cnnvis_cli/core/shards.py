"""Deterministic shards for CI matrices, Kubernetes Indexed Jobs and SLURM job arrays.

``--shard I/N`` (or ``CNNVIS_SHARD=I/N``; I from 0 to N - 1, as GitHub's ``strategy.job-index``
and Kubernetes' ``JOB_COMPLETION_INDEX`` count) keeps the inputs whose stable hash falls in
bucket I: the first 8 bytes of SHA-256 of the input's path relative to its root (its output
sub-folder and file name, as bytes), modulo N. The partition is the same on every machine and
Python version, and adding or removing a file moves only that file. Output names are chosen
over *all* inputs before sharding, so shards never give two inputs the same output name.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cnnvis_cli.core.discover import InputItem


@dataclass(frozen=True)
class Shard:
    """Bucket ``index`` of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` with 0 <= I < N; ValueError with a one-line reason otherwise."""
        parts = str(text).strip().split("/")
        try:
            index, count = (int(part) for part in parts)
        except ValueError:
            index, count = -1, 0
        if len(parts) != 2 or count < 1 or not 0 <= index < count:
            raise ValueError(
                f"--shard {text!r} must be I/N with 0 <= I < N (e.g. 0/4 ... 3/4); for a 1-based "
                "job array use $((SLURM_ARRAY_TASK_ID - 1))/N"
            )
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, key: str) -> bool:
        return bucket(key, self.count) == self.index


def bucket(key: str, count: int) -> int:
    """The stable bucket of a relative path: SHA-256's first 8 bytes (big-endian) mod count."""
    digest = hashlib.sha256(os.fsencode(key)).digest()
    return int.from_bytes(digest[:8], "big") % count


def item_key(item: InputItem) -> str:
    """An input's path relative to its root: its output sub-folder and file name."""
    return (item.rel_dir / item.path.name).as_posix()


def problem_key(path: Path) -> str:
    return path.name

"""Expected classes (``--labels FILE``): is the model's own top-1 prediction right?

A heatmap of a misclassified image explains the wrong answer, so a run given labels records per
image ``"label": {"class_index", "class_name", "correct"}`` (the *predicted* class against the
expected one, whatever ``--class`` explained), the closing table counts the misclassified images
and the report marks them. In ``cnnvis check`` a misclassified image fails its test case (and its
JUnit case) and the set passes only when the share of labelled images classified correctly is at
least ``--min-accuracy`` (1.0 by default: one misclassified image fails the gate).

The file is JSON ``{"scene_01.png": "cross", "scene_02.jpg": 3, ...}`` (``sample_images/
labels.json``): keys are matched against each input's file name, then its path, like the region
boxes; values are class names or indices. Inputs without a key are not judged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnvis_cli.errors import CnnvisError


class Labels:
    """Expected classes by file name, resolved to the model's class indices."""

    def __init__(self, source: Path) -> None:
        self.source = source
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CnnvisError(f"labels file not found: {source}") from None
        except (OSError, ValueError) as exc:
            raise CnnvisError(f"{source}: cannot read labels ({exc})") from None
        if not isinstance(data, dict) or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in data.values()
        ):
            raise CnnvisError(
                f"{source}: expected a JSON object of file name -> class name or index"
            )
        self.raw: dict[str, str | int] = data
        self.indices: dict[str, int] = {}
        self.names: list[str] | None = None

    def resolve(self, adapter: Any) -> None:
        """Map every label to the model's class index (exit 2 for a name it does not have)."""
        for key, value in self.raw.items():
            try:
                self.indices[key] = adapter.class_index(str(value))
            except CnnvisError as exc:
                raise CnnvisError(f"{self.source}: the label of {key!r}: {exc}") from None
        self.names = adapter.class_names

    def expected(self, path: Path) -> int | None:
        """The expected class index of an input, or None when it has no label."""
        for key in (path.name, str(path), path.as_posix()):
            if key in self.indices:
                return self.indices[key]
        return None

    def judge(self, path: Path, predicted: int | None) -> dict[str, Any] | None:
        """``{"class_index", "class_name", "correct"}`` for a labelled input, else None."""
        expected = self.expected(path)
        if expected is None or predicted is None:
            return None
        name = self.names[expected] if self.names and expected < len(self.names) else None
        return {"class_index": expected, "class_name": name, "correct": predicted == expected}

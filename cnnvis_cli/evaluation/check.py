"""``cnnvis check``: does the model look at the right place?

For each image with a known region (a box or a mask), the heatmap H (at the image's own
resolution, non-negative) is scored two ways:

- **energy inside the region**: E = sum_{p in R} H(p) / sum_p H(p), the share of the heatmap's
  mass inside the region (the "energy-based pointing game" of Wang et al., Score-CAM, 2020);
- **pointing game** (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV
  2016): a hit when the heatmap's maximum lies inside the region.

For both, R is the region grown by ``tolerance`` pixels (a disc): a CAM is computed on a coarse
grid (a 12 x 12 map spreads each cell over ~50 pixels of a 640-pixel image), and the tolerance
keeps a well-placed but blurry map from being judged as missing a small object.

An image's test case fails when the pointing game misses, or when expected labels are given
(``--labels``, see ``labels.py``) and the model's top-1 class is not the expected one. The set
passes when the mean energy is at least ``min_energy``, the hit rate at least ``min_hit_rate``
and — with labels — the share of labelled images classified correctly at least
``min_accuracy``; a failing set makes ``cnnvis check`` exit with code 3.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cnnvis_cli.core.decode import read_bytes
from cnnvis_cli.core.discover import IMAGE_SUFFIXES
from cnnvis_cli.errors import CnnvisError, InputError
from cnnvis_cli.methods.normalize import heat_from_map

EPSILON = 1e-12


def energy_inside(heat: np.ndarray, region: np.ndarray) -> float:
    """sum(H inside) / sum(H); 0 for an all-zero heatmap."""
    total = float(heat.sum())
    return float(heat[region].sum()) / total if total > EPSILON else 0.0


def grow(region: np.ndarray, tolerance: int) -> np.ndarray:
    """The region dilated by a disc of radius ``tolerance`` pixels."""
    if tolerance <= 0:
        return region
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1,) * 2)
    return cv2.dilate(region.astype(np.uint8), kernel).astype(bool)


def pointing_hit(heat: np.ndarray, region: np.ndarray, tolerance: int = 0) -> bool:
    """True when the heatmap's maximum falls inside ``region`` grown by ``tolerance`` pixels."""
    if float(heat.max()) <= EPSILON:
        return False
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return bool(grow(region, tolerance)[y, x])


class Regions:
    """Ground-truth regions: a JSON file of boxes, or a folder of mask images with the same stems.

    Boxes are ``{"name.png": [x0, y0, x1, y1], ...}`` in each image's own pixels (x1, y1
    exclusive); keys are matched against the input's file name, then its path. Masks: any
    non-zero pixel belongs to the region; a mask of another size is resized (nearest). A box
    that is not four finite numbers, or a mask that cannot be read, is an error for that image
    only (``InputError``); the other images are still checked.
    """

    def __init__(self, source: Path) -> None:
        self.source = source
        self.boxes: dict[str, Any] = {}
        self.masks: dict[str, Path] = {}
        if source.is_dir():
            for path in sorted(source.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    self.masks[path.stem] = path
        elif source.is_file():
            try:
                data = json.loads(source.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CnnvisError(f"{source}: cannot read regions ({exc})") from None
            if not isinstance(data, dict):
                raise CnnvisError(f"{source}: expected a JSON object of file name -> box")
            self.boxes = dict(data)
        else:
            raise CnnvisError(f"regions not found: {source} (a boxes JSON file or a mask folder)")
        if not self.boxes and not self.masks:
            raise CnnvisError(f"{source}: no boxes or masks in it")

    def describe(self, path: Path) -> list[float] | str | None:
        """The box (or mask file) for an input, or None when it has no region."""
        for key in (path.name, str(path), path.as_posix()):
            if key in self.boxes:
                return self._box(key)
        mask = self.masks.get(path.stem)
        return str(mask) if mask is not None else None

    def _box(self, key: str) -> list[float]:
        box = self.boxes[key]
        numbers = []
        if isinstance(box, list) and len(box) == 4:
            for value in box:
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    numbers.append(float(value))
        if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
            raise InputError(
                f"its box in {self.source} is {json.dumps(box)[:80]}; a box must be four "
                "finite numbers [x0, y0, x1, y1] in pixels"
            )
        return numbers

    def mask(self, path: Path, height: int, width: int) -> np.ndarray | None:
        """The region as an H x W bool mask for the input at ``path``, or None."""
        region = self.describe(path)
        if region is None:
            return None
        if isinstance(region, list):
            x0, y0, x1, y1 = (round(v) for v in region)
            mask = np.zeros((height, width), bool)
            mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
            return mask
        try:
            raw = read_bytes(Path(region))
        except InputError as exc:
            raise InputError(f"its mask {region} cannot be read ({exc})") from None
        data = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
        if data is None:
            raise InputError(f"its mask {region} is not a readable image; re-export it")
        if data.shape != (height, width):
            data = cv2.resize(data, (width, height), interpolation=cv2.INTER_NEAREST)
        return data > 0


@dataclass
class RegionCheck:
    """Scores heatmaps against regions and decides whether the set passes."""

    regions: Regions
    min_energy: float = 0.5
    min_hit_rate: float = 0.9
    tolerance: int = 15
    min_accuracy: float = 1.0

    def analyze(
        self, path: Path, full: np.ndarray, label: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The per-image record: energy, hit, whether it passes, and the region used;
        ``label`` (see ``labels.py``): a misclassified image fails with the reason."""
        heat = heat_from_map(full)
        region = self.regions.mask(path, heat.shape[0], heat.shape[1])
        wrong = label is not None and not label["correct"]
        reason = None
        if wrong:
            expected = label["class_name"] or f"class {label['class_index']}"
            reason = f"misclassified: the model does not predict the expected {expected}"
        if region is None:
            if wrong:
                return {"region": None, "passed": False, "reason": reason}
            return {"region": None, "skipped": "no region for this image"}
        grown = grow(region, self.tolerance)
        energy = energy_inside(heat, grown)
        hit = pointing_hit(heat, grown)
        record = {
            "region": self.regions.describe(path),
            "energy": round(energy, 6),
            "hit": hit,
            "passed": hit and not wrong,
        }
        if reason is not None:
            record["reason"] = reason
        return record

    def verdict(
        self, checks: list[dict[str, Any] | None], labels: list[dict[str, Any] | None] | None = None
    ) -> dict[str, Any]:
        """Set-level figures over the per-image check records that were scored (and the
        labels of the processed images, when expected labels were given)."""
        return verdict(
            checks, self.min_energy, self.min_hit_rate, self.tolerance, labels, self.min_accuracy
        )


def verdict(
    checks: list[dict[str, Any] | None],
    min_energy: float,
    min_hit_rate: float,
    tolerance: int,
    labels: list[dict[str, Any] | None] | None = None,
    min_accuracy: float = 1.0,
) -> dict[str, Any]:
    """The set's mean energy and hit rate over the scored images — and with expected labels
    the share classified correctly — and whether they pass."""
    scored = [c for c in checks if c and c.get("energy") is not None]
    mean_energy = float(np.mean([c["energy"] for c in scored])) if scored else 0.0
    hit_rate = float(np.mean([c["hit"] for c in scored])) if scored else 0.0
    passed = bool(scored) and mean_energy >= min_energy and hit_rate >= min_hit_rate
    judged = [label for label in labels or [] if label is not None]
    extra: dict[str, Any] = {}
    if judged:
        accuracy = float(np.mean([j["correct"] for j in judged]))
        passed = passed and accuracy >= min_accuracy
        extra = {
            "labelled": len(judged),
            "misclassified": sum(1 for j in judged if not j["correct"]),
            "accuracy": round(accuracy, 6),
            "min_accuracy": min_accuracy,
        }
    return {
        "images": len(scored),
        "mean_energy": round(mean_energy, 6),
        "hit_rate": round(hit_rate, 6),
        "min_energy": min_energy,
        "min_hit_rate": min_hit_rate,
        "tolerance": tolerance,
        **extra,
        "passed": passed,
    }

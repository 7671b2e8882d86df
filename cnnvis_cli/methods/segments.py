"""Superpixels and coalitions: the interpretable features of KernelSHAP and LIME.

An image (at the model's input size) is cut into M segments (``--segments``):

- ``slic`` (default): SLIC superpixels (Achanta et al., TPAMI 2012), scikit-image's
  ``skimage.segmentation.slic`` on the image scaled to [0, 1] with ``n_segments =
  --n-segments``, ``compactness = 10`` (in CIELAB, scikit-image's default; 0.1 on gray
  images, whose intensities span [0, 1]), no pre-smoothing (``sigma = 0``, the default: a
  blur moves segment borders off colour edges) and connected segments. SLIC returns about,
  not exactly, ``--n-segments`` segments (few on pure noise: use ``grid`` there); the labels
  are renumbered 0 .. M - 1.
- ``grid``: a regular grid of rows x columns cells with rows = round(sqrt(n h / w)) and
  columns = round(n / rows), so cells are about square; pixel (i, j) is in cell
  (floor(i rows / h), floor(j columns / w)).

A coalition z in {0, 1}^M keeps segment j where z_j = 1 and fills it with the baseline
(``--baseline``, raw 0..255 pixels: see ``methods/perturbation.py``) where z_j = 0. The coalition
images are built inside one compiled function from the (h, w) label map and an (n, M) coalition
matrix, ``--eval-batch`` coalitions per call: only the coalitions (bits), never all images, are
held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.normalize import max_scale, normalize_by_max
from cnnvis_cli.methods.perturbation import PerturbationMethod, Report, baseline_image
from cnnvis_cli.options import Options, check_range, option

SEGMENTERS = ("slic", "grid")


def grid_labels(height: int, width: int, count: int) -> np.ndarray:
    """(h, w) int32 labels of a regular grid of about ``count`` cells, numbered row-major."""
    rows = int(np.clip(round(np.sqrt(count * height / width)), 1, height))
    cols = int(np.clip(round(count / rows), 1, width))
    row = np.arange(height) * rows // height
    col = np.arange(width) * cols // width
    return (row[:, None] * cols + col[None, :]).astype(np.int32)


def slic_labels(image: np.ndarray, count: int) -> np.ndarray:
    """(h, w) int32 SLIC labels 0 .. M - 1 of a raw (h, w, c) 0..255 image."""
    from skimage.segmentation import slic

    scaled = np.clip(np.asarray(image, dtype=np.float64) / 255.0, 0.0, 1.0)
    if scaled.shape[2] == 1:
        labels = slic(
            scaled[:, :, 0], n_segments=count, compactness=0.1, sigma=0, channel_axis=None
        )
    else:
        labels = slic(scaled, n_segments=count, compactness=10, sigma=0, channel_axis=-1)
    _, renumbered = np.unique(labels, return_inverse=True)
    return renumbered.reshape(labels.shape).astype(np.int32)


def segment(image: np.ndarray, segmenter: str, count: int) -> np.ndarray:
    """(h, w) int32 segment labels 0 .. M - 1 of one raw image."""
    if segmenter == "grid":
        return grid_labels(image.shape[0], image.shape[1], count)
    return slic_labels(image, count)


def segment_map(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-segment values (K, M) painted on the label map: (K, h, w)."""
    return np.asarray(values)[:, labels]


@dataclass(frozen=True)
class SegmentOptions(Options):
    """Options shared by the superpixel methods (KernelSHAP, LIME)."""

    segments: str = option(
        "slic",
        "Interpretable features: slic (SLIC superpixels) | grid (a regular grid).",
        metavar="slic|grid",
    )
    n_segments: int = option(50, "About how many segments.", metavar="N", min=1)
    baseline: str = option(
        "mean",
        "Fill of removed segments: mean (image mean) | zero | gray (127.5) | blur | a value on "
        "the 0..255 scale.",
        metavar="BASELINE",
    )
    seed: int = option(0, "Sampling seed (results are reproducible).", metavar="N")

    def __post_init__(self) -> None:
        if self.segments not in SEGMENTERS:
            raise ValueError(f"unknown --segments {self.segments!r}; use slic or grid")
        check_range("--n-segments", self.n_segments, 1)


class CoalitionMethod(PerturbationMethod):
    """Base: per-segment values of one image from the outputs of coalition images."""

    kind = "signed"

    def __init__(self, adapter: Any, options: Any = None, **kwargs: Any) -> None:
        super().__init__(adapter, options, **kwargs)
        self._coalition_outputs = self.compile(self._coalition_fn)

    def _coalition_fn(
        self, image: Any, baseline: Any, labels: Any, coalitions: Any, targets: Any
    ) -> Any:
        """Target outputs (n, K) of n coalition images: ``coalitions`` (n, M) float32 0/1,
        ``labels`` (h, w) int32 segment of each pixel, ``targets`` (K,) int32."""
        tf, _ = tf_and_keras()
        keep = tf.gather(coalitions, labels, axis=1) > 0.5  # (n, h, w)
        perturbed = tf.where(keep[..., None], image[None], baseline[None])
        return self.target_outputs(perturbed, targets)

    def labels(self, image: np.ndarray) -> np.ndarray:
        """The (h, w) segment labels of one raw image."""
        return segment(image, self.options.segments, self.options.n_segments)

    def coalition_outputs(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        coalitions: np.ndarray,
        targets: np.ndarray,
        report: Report = None,
    ) -> np.ndarray:
        """(n, K) float64 target outputs of the coalitions (n, M), ``--eval-batch`` per call."""
        tf, _ = tf_and_keras()
        image = np.asarray(image, dtype=np.float32)
        image_t = tf.constant(image)
        baseline_t = tf.constant(baseline_image(image, self.options.baseline))
        labels_t = tf.constant(np.asarray(labels, dtype=np.int32))
        targets_t = tf.constant(np.asarray(targets, dtype=np.int32))
        coalitions = np.asarray(coalitions, dtype=np.float32)
        outputs = np.empty((len(coalitions), len(targets)), dtype=np.float64)
        for chunk in self.evaluation_chunks(len(coalitions)):
            result = self._coalition_outputs(
                image_t, baseline_t, labels_t, tf.constant(coalitions[chunk.index]), targets_t
            ).numpy()
            outputs[chunk.index[: chunk.real]] = result[: chunk.real]
            if report is not None:
                report(chunk.done)
        return outputs

    def normalize(self, maps: np.ndarray) -> np.ndarray:
        return np.stack([normalize_by_max(m, signed=True) for m in maps])

    def scales(self, maps: np.ndarray) -> np.ndarray:
        return np.array([max_scale(m, signed=True) for m in maps])

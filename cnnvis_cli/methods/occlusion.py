"""Occlusion sensitivity: how much the target's output drops when a patch of the image is hidden.

Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014 (section 4.2).

A square patch of side ``p`` slides over the model input with stride ``s``; its top-left corners
are ``y in {0, s, 2s, ...} <= h - p`` plus ``h - p`` itself (so the last row of patches reaches
the border even when ``s`` does not divide ``h - p``), and likewise for ``x``. For each corner
``(y, x)`` the patch is replaced by a baseline ``b`` (on the raw 0..255 scale, before the
model's preprocessing)::

    M_yx       = 1 on [y, y + p) x [x, x + p), else 0
    I_yx       = I * (1 - M_yx) + b * M_yx
    d_yx^c     = f_c(I) - f_c(I_yx)            (drop of the target's output; a probability for
                                               softmax / sigmoid heads)
    D^c[i, j]  = mean of d_yx^c over the patches covering pixel (i, j)

A positive ``D`` marks evidence for the class. The heatmap is ``max(D, 0) / (max D + eps)`` in
[0, 1] — not min-max, so a region whose occlusion changes nothing stays exactly 0 — or, with
``signed_map``, ``D / (max |D| + eps)`` in [-1, 1] (negative: hiding it *raises* the score).

Baselines: ``mean`` (the image's per-channel mean, default), ``zero``, ``gray`` (127.5), ``blur``
(a Gaussian blur of the image with sigma = p / 2, OpenCV ``GaussianBlur``, reflected borders),
or a number on the raw 0..255 scale.

The occluded copies are built inside one compiled function, ``batch_size`` corners at a time
(the last chunk is padded so the function is traced once per input shape): the masks are
broadcast comparisons of ``range(h)`` / ``range(w)`` with the corners, so memory does not grow
with the number of positions. The drops fill a (rows x columns) grid of positions, turned into
the per-pixel mean exactly by ``D = (R G C^T) / (R 1)(C 1)^T`` with the 0/1 cover matrices
``R[i, a] = [y_a <= i < y_a + p]`` and ``C[j, b] = [x_b <= j < x_b + p]``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnvis_cli._tf import tf_and_keras
from cnnvis_cli.methods import baselines
from cnnvis_cli.methods.base import (
    Explanation,
    Method,
    ProgressCallback,
)
from cnnvis_cli.model import ModelAdapter

BASELINES = ("mean", "zero", "gray", "blur")
EPSILON = 1e-8


def default_patch(height: int, width: int) -> int:
    """16 pixels at 224 x 224, scaled by min(h, w) / 224, rounded half up, at least 1."""
    return max(1, math.floor(16 * min(height, width) / 224 + 0.5))


def patch_corners(size: int, patch: int, stride: int) -> np.ndarray:
    """Top-left corners 0, s, 2s, ... <= size - patch, plus size - patch if missing (int64)."""
    corners = list(range(0, size - patch + 1, stride))
    if corners[-1] != size - patch:
        corners.append(size - patch)
    return np.asarray(corners, dtype=np.int64)


def cover_matrix(corners: np.ndarray, patch: int, size: int) -> np.ndarray:
    """(size, n) 0/1 matrix: entry [i, a] is 1 when the patch at corners[a] covers index i."""
    index = np.arange(size)[:, None]
    return ((index >= corners[None, :]) & (index < corners[None, :] + patch)).astype(np.float64)


def average_drop_map(
    drops: np.ndarray, ys: np.ndarray, xs: np.ndarray, patch: int, height: int, width: int
) -> np.ndarray:
    """Per-pixel mean of the drops of the patches covering it: (ny, nx, K) grid -> (K, h, w).

    Pixels covered by no patch get 0 (cannot happen with the border rule of ``patch_corners``).
    """
    rows, cols = cover_matrix(ys, patch, height), cover_matrix(xs, patch, width)
    counts = np.outer(rows.sum(axis=1), cols.sum(axis=1))
    grid = np.asarray(drops, dtype=np.float64)
    sums = np.stack([rows @ grid[:, :, k] @ cols.T for k in range(grid.shape[2])])
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)


def normalise_drop_map(drop_map: np.ndarray, *, signed: bool = False) -> np.ndarray:
    """max(D, 0) / (max D + eps) in [0, 1], or D / (max |D| + eps) in [-1, 1] when signed."""
    drop_map = np.asarray(drop_map, dtype=np.float64)
    if signed:
        return drop_map / (np.abs(drop_map).max() + EPSILON)
    positive = np.maximum(drop_map, 0.0)
    return positive / (positive.max() + EPSILON)


def parse_baseline(baseline: str | float) -> str | float:
    """Occlusion's --baseline: mean, zero, gray, blur or a number on the 0..255 scale."""
    return baselines.parse_baseline(baseline, BASELINES, "occlusion")


def baseline_image(image: np.ndarray, baseline: str | float, patch: int) -> np.ndarray:
    """The (h, w, c) float32 values that replace the occluded pixels (blur sigma = patch / 2)."""
    return baselines.baseline_image(image, baseline, blur_sigma=patch / 2)


class Occlusion(Method):
    """Occlusion sensitivity with a sliding square patch (``patch``/``stride`` in input pixels).

    Args:
        patch: patch side; None: 16 at 224 x 224, scaled with the input size.
        stride: step between patches; None: max(1, patch // 2).
        baseline: ``mean``, ``zero``, ``gray``, ``blur`` or a raw pixel value.
        signed_map: keep negative drops (maps in [-1, 1], rendered with a diverging colormap).
        **kwargs: ``class_index``, ``top_k`` and ``batch_size`` (occluded copies per call).
    """

    name = "occlusion"
    batch_counts_images = False
    title = "Occlusion"
    signed = False
    needs_gradients = False

    def __init__(
        self,
        adapter: ModelAdapter,
        *,
        patch: int | None = None,
        stride: int | None = None,
        baseline: str | float = "mean",
        signed_map: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(adapter, **kwargs)
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        self.patch = None if patch is None else int(patch)
        self.stride = None if stride is None else int(stride)
        self.baseline = parse_baseline(baseline)
        self.signed_map = bool(signed_map)
        self.diverging = self.signed_map
        if self.patch is not None and self.patch < 1:
            raise ValueError(f"--patch must be at least 1 pixel, got {self.patch}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"--stride must be at least 1 pixel, got {self.stride}")
        if adapter.input_size is not None:
            self._geometry(*adapter.input_size)  # validate now, before any image is read
        self._occluded_outputs = self.compile(self._occluded_fn)

    # -- configuration ------------------------------------------------------------------------

    def _geometry(self, height: int, width: int) -> tuple[int, int]:
        """(patch, stride) for an input of height x width; ValueError if they do not fit."""
        patch = self.patch if self.patch is not None else default_patch(height, width)
        stride = self.stride if self.stride is not None else max(1, patch // 2)
        if patch > min(height, width):
            raise ValueError(
                f"--patch {patch} is larger than the model input ({height}x{width}); "
                f"use at most {min(height, width)}"
            )
        return patch, stride

    def positions(self, height: int, width: int) -> int:
        """Number of patch positions on a height x width input."""
        patch, stride = self._geometry(height, width)
        ys, xs = patch_corners(height, patch, stride), patch_corners(width, patch, stride)
        return len(ys) * len(xs)

    def params(self) -> dict[str, Any]:
        size = self.adapter.input_size
        patch, stride = self._geometry(*size) if size else (self.patch, self.stride)
        return {
            **super().params(),
            "patch": patch,
            "stride": stride,
            "baseline": self.baseline,
            "signed": self.signed_map,
            "positions": self.positions(*size) if size else None,
        }

    # -- compiled functions -------------------------------------------------------------------

    def _occluded_fn(
        self, image: Any, baseline: Any, corners: Any, patch: Any, targets: Any
    ) -> Any:
        """Target outputs (n, K) for n occluded copies of one (h, w, c) image.

        ``corners`` (n, 2) int32 are the patches' top-left (y, x); ``patch`` an int32 scalar;
        ``targets`` (K,) int32 class indices.
        """
        tf, _ = tf_and_keras()
        dynamic = tf.shape(image)  # static sizes when known, so the model sees full shapes
        height, width, channels = (
            dynamic[i] if image.shape[i] is None else int(image.shape[i]) for i in range(3)
        )
        # Rows and (column, channel) pairs flattened to one axis of w * c, so the select below
        # needs no broadcast along a trailing axis of size c (several times faster in TF).
        y0, x0 = corners[:, 0:1], corners[:, 1:2]  # (n, 1)
        rows = tf.range(height, dtype=tf.int32)[None, :]  # (1, h)
        cols = (tf.range(width * channels, dtype=tf.int32) // channels)[None, :]  # (1, w c)
        in_rows = (rows >= y0) & (rows < y0 + patch)  # (n, h)
        in_cols = (cols >= x0) & (cols < x0 + patch)  # (n, w c)
        mask = in_rows[:, :, None] & in_cols[:, None, :]  # (n, h, w c)
        flat = [height, width * channels]
        # = image * (1 - mask) + baseline * mask for a 0/1 mask, exactly and without arithmetic
        occluded = tf.where(mask, tf.reshape(baseline, flat)[None], tf.reshape(image, flat)[None])
        occluded = tf.reshape(occluded, [-1, height, width, channels])
        outputs = self.adapter.forward(occluded).outputs
        return tf.gather(outputs, targets, axis=1)

    # -- computation ----------------------------------------------------------------------------

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        """Explain N raw images (N x h x w x c float32); short batches are not padded here, since
        every image is occluded on its own (``batch_size`` counts occluded copies per call)."""
        if len(images) == 0:
            return []
        return self._explain(np.asarray(images, dtype=np.float32), progress)

    def _image_drops(
        self,
        image: np.ndarray,
        targets: np.ndarray,
        base: np.ndarray,
        report: Any = None,
    ) -> tuple[np.ndarray, dict[str, int]]:
        """Averaged drop maps (K, h, w) of one raw image for its targets (K,) / outputs (K,)."""
        tf, _ = tf_and_keras()
        height, width = image.shape[:2]
        patch, stride = self._geometry(height, width)
        ys, xs = patch_corners(height, patch, stride), patch_corners(width, patch, stride)
        total = len(ys) * len(xs)
        # equal chunks of at most batch_size: the last one wastes < chunks forward passes
        n = math.ceil(total / math.ceil(total / self.batch_size))
        image_t = tf.constant(image)
        baseline_t = tf.constant(baseline_image(image, self.baseline, patch))
        patch_t = tf.constant(patch, tf.int32)
        targets_t = tf.constant(np.asarray(targets, dtype=np.int32))
        outputs = np.empty((total, len(targets)), dtype=np.float64)
        chunks = math.ceil(total / n)
        for chunk in range(chunks):
            index = np.arange(chunk * n, (chunk + 1) * n) % total  # pad by wrapping around
            corners = np.stack([ys[index // len(xs)], xs[index % len(xs)]], axis=1)
            result = self._occluded_outputs(
                image_t, baseline_t, tf.constant(corners.astype(np.int32)), patch_t, targets_t
            ).numpy()
            real = min(n, total - chunk * n)
            outputs[chunk * n : chunk * n + real] = result[:real]
            if report is not None:
                report((chunk + 1) / chunks)
        drops = np.asarray(base, dtype=np.float64)[None, :] - outputs
        drop_map = average_drop_map(
            drops.reshape(len(ys), len(xs), -1), ys, xs, patch, height, width
        )
        return drop_map, {"patch": patch, "stride": stride, "positions": total}

    def _run(
        self, images: np.ndarray, progress: ProgressCallback | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, int]]]:
        """Raw averaged drop maps (B, K, h, w), targets (B, K), outputs (B, K), geometry."""
        images = np.asarray(images, dtype=np.float32)
        count = len(images)
        targets, scores = self.predict_targets(images)
        maps, geometry = [], []
        for b in range(count):

            def report(fraction: float, b: int = b) -> None:
                if progress is not None:
                    progress((b + fraction) / count)

            repeat = b > 0 and np.array_equal(targets[b], targets[b - 1])
            if repeat and np.array_equal(images[b], images[b - 1]):
                # a repeat (callers pad short batches with copies of the last image): same maps
                maps.append(maps[-1])
                geometry.append(geometry[-1])
                report(1.0)
                continue
            drop_map, info = self._image_drops(images[b], targets[b], scores[b], report)
            maps.append(drop_map)
            geometry.append(info)
        return np.stack(maps), targets, scores, geometry

    def drop_maps(self, images: np.ndarray) -> np.ndarray:
        """Un-normalised averaged drop maps (B, K, h, w) float64 for raw images (B, h, w, c)."""
        return self._run(images, None)[0]

    def _explain(self, images: np.ndarray, progress: ProgressCallback | None) -> list[Explanation]:
        drop_maps, targets, scores, geometry = self._run(images, progress)
        explanations = []
        for b, info in enumerate(geometry):
            explanations.append(
                Explanation(
                    class_indices=[int(c) for c in targets[b]],
                    scores=[float(s) for s in scores[b]],
                    maps=[
                        normalise_drop_map(m, signed=self.signed_map).astype(np.float32)
                        for m in drop_maps[b]
                    ],
                    extras={"max_drop": [float(m.max()) for m in drop_maps[b]], **info},
                )
            )
        return explanations

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
[0, 1] — not min-max, so a region whose occlusion changes nothing stays 0 — or, with
``--signed``, ``D / (max |D| + eps)`` in [-1, 1] (negative: hiding it *raises* the score).

Baselines: ``mean`` (the image's per-channel mean, default), ``zero``, ``gray`` (127.5), ``blur``
(a Gaussian blur of the image with sigma = p / 2, OpenCV ``GaussianBlur``, reflected borders),
or a number on the raw 0..255 scale.

Incremental inference (Nakandala, Kumar & Papakonstantinou, "Incremental and Approximate
Inference for Faster Occlusion-based Deep CNN Explanations", SIGMOD 2019 — Krypton;
``--incremental``, see ``cnnvis_cli/incremental``): a patch changes only a window of every
feature map, so the engine caches the image's own forward pass and recomputes only those
windows, exactly. ``auto`` (the default) turns it on when its cost estimate, counted from the
model's layers before any image is read, is at most 75 % of the naive multiply-adds.
``--approximate TAU`` caps each layer's window at a fraction TAU of the map and ``--drill-down``
evaluates a grid of twice the stride first and the fine grid only around the top quarter of
drops (Krypton's approximations: faster, not exact; the summary says which ran).

The occluded copies are built inside one compiled function, ``--eval-batch`` corners at a time
(``core.batching.chunks``: equal chunks, the last padded, so the function is traced once per input
shape): the masks are
broadcast comparisons of ``range(h)`` / ``range(w)`` with the corners, so memory does not grow
with the number of positions. The drops fill a (rows x columns) grid of positions, turned into
the per-pixel mean exactly by ``D = (R G C^T) / (R 1)(C 1)^T`` with the 0/1 cover matrices
``R[i, a] = [y_a <= i < y_a + p]`` and ``C[j, b] = [x_b <= j < x_b + p]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods import baselines
from cnnvis_cli.methods.base import Explanation, Facts, ProgressCallback, explanations_from
from cnnvis_cli.methods.copies import CopiesMethod
from cnnvis_cli.methods.normalize import max_scale, normalize_by_max
from cnnvis_cli.options import Options, check_range, option

BASELINES = ("mean", "zero", "gray", "blur")
INCREMENTAL = ("auto", "on", "off")


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


def parse_baseline(baseline: str | float) -> str | float:
    """Occlusion's --baseline: mean, zero, gray, blur or a number on the 0..255 scale."""
    return baselines.parse_baseline(baseline, BASELINES, "occlusion")


@dataclass(frozen=True)
class OcclusionOptions(Options):
    patch: int | None = option(
        None,
        "Occluding patch side in model-input pixels (default: 16 at 224x224, scaled to the "
        "input size).",
        metavar="N",
        min=1,
    )
    stride: int | None = option(None, "Patch stride (default: patch/2).", metavar="N", min=1)
    baseline: str = option(
        "mean",
        "Occluder: mean (image mean) | zero | gray (127.5) | blur | a value on the 0..255 scale.",
        metavar="BASELINE",
    )
    signed: bool = option(
        False,
        "Keep negative values (patches whose removal raises the score), drawn with a diverging "
        "colormap.",
    )
    incremental: str = option(
        "auto",
        "Incremental inference (Krypton, Nakandala et al. 2019): recompute only what each patch "
        "changes, exactly. auto: on when the model's layers make it pay (estimated up front).",
        metavar="auto|on|off",
    )
    approximate: float | None = option(
        None,
        "Approximate incremental inference: cap each layer's changed window at this fraction of "
        "the map (Krypton's tau, e.g. 0.4). Faster, not exact.",
        metavar="TAU",
    )
    drill_down: bool = option(
        False,
        "Evaluate a grid of twice the stride first, then the fine grid only around the top "
        "quarter of drops (Krypton's adaptive drill-down). Faster, not exact.",
    )

    def __post_init__(self) -> None:
        check_range("--patch", self.patch, 1)
        check_range("--stride", self.stride, 1)
        object.__setattr__(self, "baseline", parse_baseline(self.baseline))
        if self.incremental not in INCREMENTAL:
            raise ValueError(f"--incremental must be auto, on or off, got {self.incremental!r}")
        if self.approximate is not None:
            if not 0 < self.approximate <= 1:
                raise ValueError(f"--approximate must be in (0, 1], got {self.approximate}")
            if self.incremental == "off":
                raise ValueError(
                    "--approximate needs incremental inference; drop --incremental off"
                )


@dataclass(frozen=True)
class OcclusionFacts(Facts):
    """The geometry used on one image, the largest raw drop per target, how many positions
    were evaluated (fewer than ``positions`` with --drill-down) and by which engine."""

    max_drop: list[float]
    patch: int
    stride: int
    positions: int
    evaluated: int
    engine: str


def baseline_image(image: np.ndarray, baseline: str | float, patch: int) -> np.ndarray:
    """The (h, w, c) float32 values that replace the occluded pixels (blur sigma = patch / 2)."""
    return baselines.baseline_image(image, baseline, blur_sigma=patch / 2)


class Occlusion(CopiesMethod):
    """Occlusion sensitivity with a sliding square patch (``patch``/``stride`` in input pixels).

    Runs forward passes only (also on SavedModels); ``batching.evaluations`` occluded copies go
    through the model per call, naively or through the incremental engine.
    """

    name = "occlusion"
    title = "Occlusion"
    needs_gradients = False
    options_type = OcclusionOptions

    def __init__(self, adapter: Any, options: OcclusionOptions | None = None, **kwargs: Any):
        super().__init__(adapter, options, **kwargs)
        self.kind = "signed" if self.options.signed else "heatmap"
        self.estimate: Any = None  # the incremental engine's cost estimate, when computed
        self.engine: Any = None
        if adapter.input_size is not None:
            self.geometry(*adapter.input_size)  # validate now, before any image is read
        self.incremental = self._choose_engine()
        self._occluded_outputs = self.compile(self._occluded_fn)

    # -- configuration ------------------------------------------------------------------------

    def geometry(self, height: int, width: int) -> tuple[int, int]:
        """(patch, stride) for an input of height x width; ValueError if they do not fit."""
        patch = self.options.patch or default_patch(height, width)
        stride = self.options.stride or max(1, patch // 2)
        if patch > min(height, width):
            raise ValueError(
                f"--patch {patch} is larger than the model input ({height}x{width}); "
                f"use at most {min(height, width)}"
            )
        return patch, stride

    def positions(self, height: int, width: int) -> int:
        """Number of patch positions on a height x width input."""
        patch, stride = self.geometry(height, width)
        ys, xs = patch_corners(height, patch, stride), patch_corners(width, patch, stride)
        return len(ys) * len(xs)

    def _choose_engine(self) -> bool:
        """Incremental or naive (``--incremental``); ValueError when ``on`` cannot be honoured."""
        from cnnvis_cli.incremental import IncrementalOcclusion, UnsupportedModel

        wanted = self.options.incremental
        forced = wanted == "on" or self.options.approximate is not None
        if wanted == "off":
            return False
        size = self.adapter.input_size
        if size is None or self.adapter.forward_only:
            if forced:
                raise ValueError(
                    "--incremental on needs a Keras model with a fixed input size (this one is a "
                    "SavedModel or takes any size); use --incremental off"
                )
            return False
        patch, stride = self.geometry(*size)
        try:
            engine = IncrementalOcclusion(
                self.adapter.model,
                (*size, self.adapter.channels),
                output_index=self.adapter.output_index,
                batch_size=self.batching.evaluations,
                tau=self.options.approximate,
            )
        except UnsupportedModel as exc:
            if forced:
                raise ValueError(
                    f"--incremental on: nothing of this model can be computed incrementally "
                    f"({exc}); use --incremental off"
                ) from None
            return False
        self.estimate = engine.estimate_for(patch, stride)
        if not (forced or self.estimate.pays_off):
            return False
        self.engine = engine
        return True

    def trace_counts(self) -> dict[str, int]:
        counts = super().trace_counts()
        if self.engine is not None:
            counts["incremental"] = self.engine.traces
        return counts

    def engine_name(self) -> str:
        """What computes the drops: naive, incremental (exact) or an approximation."""
        name = "incremental" if self.incremental else "naive"
        if self.options.approximate is not None:
            name += f", approximate tau={self.options.approximate:g}"
        if self.options.drill_down:
            name += ", drill-down"
        return name

    def params(self) -> dict[str, Any]:
        size = self.adapter.input_size
        patch, stride = self.geometry(*size) if size else (self.options.patch, self.options.stride)
        return {
            **super().params(),
            "patch": patch,
            "stride": stride,
            "positions": self.positions(*size) if size else None,
            "engine": self.engine_name(),
            "estimate": self.estimate.summary() if self.estimate is not None else None,
        }

    def notes(self) -> list[str]:
        estimate = self.estimate
        if estimate is None:
            return []
        share = f"{estimate.flop_ratio:.0%} of the naive multiply-adds"
        if self.incremental:
            exact = "exact" if self.options.approximate is None else "approximate"
            return [f"occlusion: incremental inference ({exact}), an estimated {share}"]
        why = ""
        if estimate.full_from is not None:
            path, kind, _ = estimate.full_from
            why = f" (full maps from {path}, a {kind})"
        return [f"occlusion: naive; incremental inference would cost {share}{why}"]

    # -- compiled function ----------------------------------------------------------------------

    def _occluded_fn(
        self, image: Any, baseline: Any, corners: Any, patch: Any, targets: Any
    ) -> Any:
        """Target outputs (n, K) for n occluded copies of one (h, w, c) image.

        ``corners`` (n, 2) int32 are the patches' top-left (y, x); ``patch`` an int32 scalar;
        ``targets`` (K,) int32 class indices.

        The image and the baseline are preprocessed once, before the copies are built: every
        preprocessing mode maps each pixel on its own (``core/preprocess.py``), and the patch
        covers whole pixels, so preprocess(copy) = copy of the preprocessed values, exactly,
        and the batch is not passed over a second time.
        """
        tf, _ = tf_and_keras()
        image = self.adapter.preprocess(image)
        baseline = self.adapter.preprocess(baseline)
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
        outputs = self.adapter.forward(occluded, preprocessed=True).outputs
        return tf.gather(outputs, targets, axis=1)

    # -- computation ----------------------------------------------------------------------------

    def _naive_drops(
        self, image: np.ndarray, base: np.ndarray, targets: np.ndarray, patch: int, advance: Any
    ):
        """``evaluate(corners) -> drops (n, K)`` by full forward passes of occluded copies;
        ``advance(n)`` after each chunk of n positions.

        The unoccluded image runs as one more row of the first call (a patch at (-p, -p) covers
        nothing), so f(I) and f(I_yx) come from identical computations and a patch that changes
        no input the model sees gives a drop of 0 (up to float32 rounding).
        """
        tf, _ = tf_and_keras()
        image_t = tf.constant(image)
        baseline_t = tf.constant(base)
        patch_t = tf.constant(patch, tf.int32)
        targets_t = tf.constant(np.asarray(targets, dtype=np.int32))
        reference: list[np.ndarray] = []

        def evaluate(corners: np.ndarray) -> np.ndarray:
            rows = np.asarray(corners, dtype=np.int32).reshape(-1, 2)
            if not reference:
                rows = np.concatenate([[[-patch, -patch]], rows]).astype(np.int32)
            outputs = np.empty((len(rows), len(targets)), dtype=np.float64)
            for chunk in self.evaluation_chunks(len(rows)):
                result = self._occluded_outputs(
                    image_t, baseline_t, tf.constant(rows[chunk.index]), patch_t, targets_t
                ).numpy()
                outputs[chunk.index[: chunk.real]] = result[: chunk.real]
                advance(chunk.real - (0 if reference or chunk.index[0] else 1))
            if not reference:
                reference.append(outputs[0])
                outputs = outputs[1:]
            return reference[0][None, :] - outputs

        return evaluate

    def _incremental_drops(
        self, image: np.ndarray, base: np.ndarray, targets: np.ndarray, patch: int, advance: Any
    ):
        """``evaluate(corners) -> drops (n, K)`` through the incremental engine; ``advance(n)``
        after each chunk of n positions."""
        head = self.adapter.score_head
        preprocess = self.adapter.preprocess
        reference = head.class_outputs(self.engine.prepare(preprocess(image), preprocess(base)))
        index = np.asarray(targets, dtype=np.int64)

        def evaluate(corners: np.ndarray) -> np.ndarray:
            corners = np.asarray(corners, dtype=np.int64).reshape(-1, 2)
            drops = np.empty((len(corners), len(index)), dtype=np.float64)
            for chunk in self.evaluation_chunks(len(corners)):
                outputs = head.class_outputs(self.engine.outputs(corners[chunk.index], patch))
                drops[chunk.index[: chunk.real]] = (reference - outputs)[: chunk.real][:, index]
                advance(chunk.real)
            return drops

        return evaluate

    def image_drops(
        self, image: np.ndarray, targets: np.ndarray, report: Any = None
    ) -> tuple[np.ndarray, OcclusionFacts]:
        """Averaged drop maps (K, h, w) of one raw image for its targets (K,)."""
        from cnnvis_cli.incremental import drill_down

        height, width = image.shape[:2]
        patch, stride = self.geometry(height, width)
        base = baseline_image(image, self.options.baseline, patch)
        ys, xs = patch_corners(height, patch, stride), patch_corners(width, patch, stride)
        total = len(ys) * len(xs)
        done = 0

        def advance(count: int) -> None:  # progress: positions evaluated of the fine grid's
            nonlocal done
            done += count
            if report is not None and count:
                report(min(done / total, 1.0))

        make = self._incremental_drops if self.incremental else self._naive_drops
        evaluate = make(image, base, targets, patch, advance)
        if self.options.drill_down:
            result = drill_down(evaluate, height, width, patch, stride)
            drop_map, evaluated = result.drop_map, result.evaluated
        else:
            grid = np.stack(np.meshgrid(ys, xs, indexing="ij"), axis=-1).reshape(-1, 2)
            drops = evaluate(grid)
            drop_map = average_drop_map(
                drops.reshape(len(ys), len(xs), -1), ys, xs, patch, height, width
            )
            evaluated = total
        if report is not None and done < total:
            report(1.0)
        facts = OcclusionFacts(
            [float(m.max()) for m in drop_map], patch, stride, total, evaluated, self.engine_name()
        )
        return drop_map, facts

    def drop_maps(self, images: np.ndarray) -> np.ndarray:
        """Un-normalized averaged drop maps (B, K, h, w) float64 for raw images (B, h, w, c)."""
        return np.stack(self._drops(images)[0])

    def _drops(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> tuple[list[np.ndarray], dict[str, np.ndarray], list[OcclusionFacts]]:
        """Raw averaged drop maps (K, h, w) per image, the chosen targets and the facts."""
        images = np.asarray(images, dtype=np.float32)
        count = len(images)
        chosen = self.predict_targets(images)
        targets = chosen["targets"]
        maps: list[np.ndarray] = []
        facts: list[OcclusionFacts] = []
        for b in range(count):

            def report(fraction: float, b: int = b) -> None:
                if progress is not None:
                    progress((b + fraction) / count)

            repeat = b > 0 and np.array_equal(targets[b], targets[b - 1])
            if repeat and np.array_equal(images[b], images[b - 1]):
                # the same image twice in a row (e.g. a padded batch): the same maps
                maps.append(maps[-1])
                facts.append(facts[-1])
                report(1.0)
                continue
            drop_map, fact = self.image_drops(images[b], targets[b], report)
            maps.append(drop_map)
            facts.append(fact)
        return maps, chosen, facts

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        if len(images) == 0:
            return []
        maps, chosen, facts = self._drops(images, progress)
        signed = self.options.signed
        normalized = [np.stack([normalize_by_max(m, signed=signed) for m in drop]) for drop in maps]
        scales = [[max_scale(m, signed=signed) for m in drop] for drop in maps]
        result = {**chosen, "maps": normalized, "scales": scales}
        return explanations_from(result, self.kind, facts=facts)

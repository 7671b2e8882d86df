"""RISE: randomized input sampling — the output-weighted average of random masks.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
BMVC 2018.

N binary grids g_i of ``--grid`` s x s cells are drawn with keep probability p (``--keep-prob``).
Each is upsampled bilinearly to (s + 1) C_h x (s + 1) C_w, with the cell size C = ceil(H / s),
and cropped to H x W at a random shift (dy, dx) in [0, C_h) x [0, C_w) — the paper's procedure
(its reference code's ``generate_masks``), which gives smooth masks whose cells are not tied to a
fixed lattice. For the target c and the raw image I (0..255)::

    M_i        = crop(up(g_i), dy_i, dx_i)                  in [0, 1], H x W
    I_i        = I * M_i + b * (1 - M_i)                    b: the fill (``--baseline``)
    S^c        = sum_i f_c(I_i) M_i / (N p)                 f_c: the model's output (a
                                                            probability for softmax heads)

The displayed map is S^c min-max normalized to [0, 1] (a heatmap); the raw S^c (an expectation
of the output, on its scale) comes from :meth:`Rise.saliency`.

Conventions and where implementations differ:

- The fill b is on the raw 0..255 scale, before preprocessing: ``zero`` (default) makes
  I * M_i, black where masked. The reference code multiplies the *preprocessed* tensor, so its
  masked pixels are the model input's zero: the same as ours for [0, 1] (``unit``)
  preprocessing, the dataset mean for caffe / torch preprocessing (use ``--baseline mean`` or
  ``gray`` for a similar fill), mid-gray for [-1, 1].
- Upsampling: ``tf.image.resize`` bilinear (half-pixel centres, edges clamped); the reference
  code uses scikit-image ``resize(order=1, mode="reflect")``, which differs only within half a
  cell of the upsampled border. Xplique upsamples to int(H (1 + 1/s)) and crops anywhere in it.
- Normalization by N p as in the paper; Xplique divides by sum_i M_i per pixel instead.
- Mask i is drawn from ``tf.random.stateless_uniform`` keyed by (``--seed``, i): the same masks
  for every image, independent of batching, and mask i does not depend on N (more samples only
  add masks). The masks are built inside the compiled function, ``--eval-batch`` at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.normalize import minmax_range, normalize_minmax
from cnnvis_cli.methods.perturbation import (
    PerturbationMethod,
    Report,
    baseline_image,
    parse_baseline,
)
from cnnvis_cli.options import Options, check_range, option


@dataclass(frozen=True)
class RiseOptions(Options):
    samples: int = option(4000, "Random masks per image.", metavar="N", min=1)
    grid: int = option(7, "Cells per side of the coarse mask grid.", metavar="S", min=1)
    keep_prob: float = option(
        0.5, "Probability that a grid cell is kept.", metavar="P", min=0.0, max=1.0
    )
    baseline: str = option(
        "zero",
        "Fill of masked pixels: zero (I x M, the paper) | mean | gray (127.5) | blur | a value on "
        "the 0..255 scale.",
        metavar="BASELINE",
    )
    seed: int = option(0, "Mask seed (results are reproducible).", metavar="N")

    def __post_init__(self) -> None:
        check_range("--samples", self.samples, 1)
        check_range("--grid", self.grid, 1)
        if not 0.0 < float(self.keep_prob) <= 1.0:
            raise ValueError(f"--keep-prob must be in (0, 1], got {self.keep_prob}")
        object.__setattr__(self, "baseline", parse_baseline(self.baseline, "rise"))


def mask_geometry(height: Any, width: Any, grid: int) -> tuple[Any, Any, Any, Any]:
    """(cell_h, cell_w, up_h, up_w): cell size ceil(H / s) and the upsampled size (s + 1) C
    (Python ints, or scalar tensors for sizes known only at run time)."""
    cell_h, cell_w = (height + grid - 1) // grid, (width + grid - 1) // grid
    return cell_h, cell_w, (grid + 1) * cell_h, (grid + 1) * cell_w


def rise_draws(seed: int, samples: Any, grid: int, keep_prob: float, cell: Any) -> Any:
    """Binary grids (n, s, s) float32 and shifts (n, 2) int32 for sample indices (n,).

    Sample i draws s * s + 2 uniforms from ``stateless_uniform`` keyed by (seed, i): the first
    s * s give the grid (u < p), the last two the shift floor(u * C) along each axis.
    """
    tf, _ = tf_and_keras()
    seed_t = tf.constant(seed, tf.int64)
    cells = grid * grid

    def one(sample: Any) -> Any:
        key = tf.stack([seed_t, tf.cast(sample, tf.int64)])
        return tf.random.stateless_uniform([cells + 2], seed=key, alg="philox")

    uniforms = tf.map_fn(one, tf.convert_to_tensor(samples), fn_output_signature=tf.float32)
    grids = tf.cast(uniforms[:, :cells] < keep_prob, tf.float32)
    grids = tf.reshape(grids, [-1, grid, grid])
    cell_t = tf.cast(tf.stack([tf.cast(c, tf.int32) for c in cell]), tf.float32)
    shifts = tf.cast(tf.floor(uniforms[:, cells:] * cell_t[None, :]), tf.int32)
    shifts = tf.minimum(shifts, tf.cast(cell_t, tf.int32)[None, :] - 1)
    return grids, shifts


class Rise(PerturbationMethod):
    """RISE with ``samples`` random masks on a ``grid`` x ``grid`` grid, seeded by ``seed``."""

    name = "rise"
    title = "RISE"
    options_type = RiseOptions

    def __init__(self, adapter: Any, options: RiseOptions | None = None, **kwargs: Any):
        super().__init__(adapter, options, **kwargs)
        self._masked = self.compile(self._masked_fn)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "forwards_per_image": self.options.samples}

    def masks(self, samples: Any, height: int, width: int) -> Any:
        """The (n, H, W) float32 masks of sample indices (n,) (inside or outside a compiled
        function)."""
        tf, _ = tf_and_keras()
        grid = self.options.grid
        cell_h, cell_w, up_h, up_w = mask_geometry(height, width, grid)
        grids, shifts = rise_draws(
            self.options.seed, samples, grid, self.options.keep_prob, [cell_h, cell_w]
        )
        size = tf.stack([tf.cast(up_h, tf.int32), tf.cast(up_w, tf.int32)])
        up = tf.image.resize(grids[..., None], size, method="bilinear")[..., 0]
        rows = shifts[:, 0:1] + tf.range(height, dtype=tf.int32)[None, :]  # (n, H)
        cols = shifts[:, 1:2] + tf.range(width, dtype=tf.int32)[None, :]  # (n, W)
        up = tf.gather(up, rows, axis=1, batch_dims=1)  # (n, H, up_w)
        return tf.gather(up, cols, axis=2, batch_dims=1)  # (n, H, W)

    def _masked_fn(self, image: Any, baseline: Any, samples: Any, real: Any, targets: Any) -> Any:
        """sum_i f_c(I_i) M_i over the first ``real`` of the samples (n,): (K, H, W)."""
        tf, _ = tf_and_keras()
        dynamic = tf.shape(image)  # static sizes when known
        height, width = (
            dynamic[i] if image.shape[i] is None else int(image.shape[i]) for i in (0, 1)
        )
        masks = self.masks(samples, height, width)  # (n, H, W)
        soft = masks[..., None]
        perturbed = image[None] * soft + baseline[None] * (1.0 - soft)
        scores = self.target_outputs(perturbed, targets)  # (n, K)
        used = tf.cast(tf.range(tf.shape(samples)[0]) < real, scores.dtype)[:, None]
        return tf.einsum("nk,nhw->khw", scores * used, masks)

    def saliency(self, image: np.ndarray, targets: np.ndarray, report: Report = None) -> np.ndarray:
        """Raw RISE saliency (K, H, W) float64 of one raw image for targets (K,)."""
        tf, _ = tf_and_keras()
        image = np.asarray(image, dtype=np.float32)
        image_t = tf.constant(image)
        baseline_t = tf.constant(baseline_image(image, self.options.baseline))
        targets_t = tf.constant(np.asarray(targets, dtype=np.int32))
        total = self.options.samples
        sums = np.zeros((len(targets), *image.shape[:2]), dtype=np.float64)
        for chunk in self.evaluation_chunks(total):
            part = self._masked(
                image_t,
                baseline_t,
                tf.constant(chunk.index.astype(np.int32)),
                tf.constant(chunk.real, tf.int32),
                targets_t,
            )
            sums += part.numpy().astype(np.float64)
            if report is not None:
                report(chunk.done)
        return sums / (total * self.options.keep_prob)

    def attribute(
        self, image: np.ndarray, targets: np.ndarray, outputs: np.ndarray, report: Report
    ) -> tuple[np.ndarray, None]:
        return self.saliency(image, targets, report), None

    def normalize(self, maps: np.ndarray) -> np.ndarray:
        return normalize_minmax(maps)

    def scales(self, maps: np.ndarray) -> np.ndarray:
        return minmax_range(maps)

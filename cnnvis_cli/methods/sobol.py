"""Sobol attribution: total-order Sobol indices of coarse mask cells, from quasi-Monte-Carlo
masks.

Fel, Cadène, Chalvidal, Cord, Vigouroux & Serre, "Look at the Variance! Efficient Black-box
Explanations with Sobol-based Sensitivity Analysis", NeurIPS 2021.

The image is cut into a ``--grid`` g x g lattice of cells; each cell i gets a mask value
u_i in [0, 1], the cell's pixels become I u_i + b (1 - u_i) (b: the fill, ``--baseline``, raw
0..255 pixels) and f(u) is the model's output for the target on that image (a probability for
softmax heads). The total-order index of cell i — the share of the output's variance that
involves u_i — is estimated with Jansen's estimator on two N x d quasi-Monte-Carlo matrices A and
B (d = g^2, N = ``--designs``) and the d replicated designs C^i (A with column i taken from B)::

    ST_i = sum_j (f(A_j) - f(C^i_j))^2 / (2 N Var_j f(A_j))      (Var with ddof = 1)

A and B are the two halves of N points of a scrambled Sobol sequence in 2d dimensions
(``scipy.stats.qmc.Sobol(2 d, scramble=True, seed=--seed)``); N must be a power of two (the
sequence's balance property). The map is the g x g grid of ST_i divided by its maximum (zero
stays zero), upsampled to the image by the pipeline (``--upsample``: bilinear by default,
``bicubic`` is Xplique's choice).

Follows Xplique's ``SobolAttributionMethod`` (grid_size = 8, nb_design = 32, Jansen estimator,
the "inpainting" perturbation x * M, masks upsampled by nearest neighbour), except:

- the fill is on the raw 0..255 scale and defaults to ``blur`` (a Gaussian blur, sigma =
  min(h, w) / 20; Xplique's "blurring" uses a 10 x 10 box filter). ``zero`` is Xplique's default
  "inpainting" x * M for [0, 1] preprocessing (Xplique multiplies the *model input*, so for
  caffe / torch preprocessing its zero is the dataset mean, closer to our ``mean``). Why not
  ``zero`` by default: dimming a region towards black is a weak, global perturbation for many
  models. On the bundled demo model (scene_01, a cross, N = 32) the target's output varies by
  0.008 over the design with ``zero`` and the indices are scattered over the background; with
  ``blur`` (0.055) or ``mean`` (0.045) the two cells holding the cross carry three quarters
  (blur) or two thirds (mean) of the sum of the indices;
- the Sobol sequence is scrambled and seeded (Xplique's default sampler is the unscrambled
  ``tf.math.sobol_sample``, whose first point is all zeros);
- f(B) is not evaluated: Jansen's total index does not use it, so an image costs N (d + 1)
  forward passes (2080 at the defaults) instead of N (d + 2);
- nearest-neighbour upsampling puts pixel (y, x) in cell (floor(y g / H), floor(x g / W)).

The design (N (d + 1) rows of d numbers) is small and made once per run; the perturbed images are
built inside the compiled function, ``--eval-batch`` rows at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.base import Facts
from cnnvis_cli.methods.normalize import max_scale, normalize_by_max
from cnnvis_cli.methods.perturbation import (
    PerturbationMethod,
    Report,
    baseline_image,
    parse_baseline,
)
from cnnvis_cli.options import Options, check_range, option

EPSILON = 1e-12


@dataclass(frozen=True)
class SobolOptions(Options):
    grid: int = option(8, "Cells per side of the coarse mask grid.", metavar="S", min=1)
    designs: int = option(
        32,
        "Quasi-Monte-Carlo designs N (a power of two); N (S^2 + 1) forward passes.",
        metavar="N",
        min=2,
    )
    baseline: str = option(
        "blur",
        "Fill as a cell's mask goes to 0: blur | zero (x * M, Xplique's inpainting) | mean | "
        "gray (127.5) | a value on the 0..255 scale.",
        metavar="BASELINE",
    )
    seed: int = option(0, "Scrambling seed of the Sobol sequence.", metavar="N")

    def __post_init__(self) -> None:
        check_range("--grid", self.grid, 1)
        check_range("--designs", self.designs, 2)
        if self.designs & (self.designs - 1):
            raise ValueError(f"--designs must be a power of two, got {self.designs}")
        object.__setattr__(self, "baseline", parse_baseline(self.baseline, "sobol"))


@dataclass(frozen=True)
class SobolFacts(Facts):
    """Forward passes per image and, per target, the output variance over the design A."""

    forwards: int
    output_variance: list[float]


def sobol_design(grid: int, designs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A and B (N, d) float32 in [0, 1]: the halves of N scrambled Sobol points in 2 d dims."""
    from scipy.stats import qmc

    dimension = grid * grid
    points = qmc.Sobol(2 * dimension, scramble=True, seed=seed % 2**64).random(designs)
    points = points.astype(np.float32)
    return points[:, :dimension], points[:, dimension:]


def design_rows(a: np.ndarray, b: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` of [A; C^0; ...; C^(d-1)]: row r < N is A_r; row N + i N + j is A_j with
    column i from B_j."""
    designs = len(a)
    rows = a[index % designs].copy()
    replicated = index >= designs
    cell = (index[replicated] - designs) // designs
    rows[replicated, cell] = b[index[replicated] % designs, cell]
    return rows


def jansen_total_indices(outputs: np.ndarray, designs: int, dimension: int) -> np.ndarray:
    """ST (K, d) from outputs (N (d + 1), K) of [A; C^0; ...; C^(d-1)]."""
    outputs = np.asarray(outputs, dtype=np.float64)
    fa = outputs[:designs]  # (N, K)
    fc = outputs[designs:].reshape(dimension, designs, -1)  # (d, N, K)
    variance = np.maximum(fa.var(axis=0, ddof=1), EPSILON)
    return (((fa[None] - fc) ** 2).sum(axis=1) / (2 * designs * variance)).T


class Sobol(PerturbationMethod):
    """Sobol attribution: Jansen total-order indices of ``grid`` x ``grid`` mask cells."""

    name = "sobol"
    title = "Sobol"
    options_type = SobolOptions

    def __init__(self, adapter: Any, options: SobolOptions | None = None, **kwargs: Any):
        super().__init__(adapter, options, **kwargs)
        self.a, self.b = sobol_design(self.options.grid, self.options.designs, self.options.seed)
        self._perturbed = self.compile(self._perturbed_fn)

    @property
    def forwards(self) -> int:
        """Forward passes per image: N (d + 1)."""
        return self.options.designs * (self.options.grid**2 + 1)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "forwards_per_image": self.forwards}

    def _perturbed_fn(self, image: Any, baseline: Any, rows: Any, targets: Any) -> Any:
        """Target outputs (n, K) of the images perturbed by design rows (n, g^2)."""
        tf, _ = tf_and_keras()
        grid = self.options.grid
        dynamic = tf.shape(image)
        height, width = (
            dynamic[i] if image.shape[i] is None else int(image.shape[i]) for i in (0, 1)
        )
        cells = tf.reshape(rows, [-1, grid, grid])
        ys = tf.range(height, dtype=tf.int32) * grid // height
        xs = tf.range(width, dtype=tf.int32) * grid // width
        masks = tf.gather(tf.gather(cells, ys, axis=1), xs, axis=2)[..., None]  # (n, H, W, 1)
        perturbed = image[None] * masks + baseline[None] * (1.0 - masks)
        return self.target_outputs(perturbed, targets)

    def total_indices(
        self, image: np.ndarray, targets: np.ndarray, report: Report = None
    ) -> tuple[np.ndarray, SobolFacts]:
        """ST (K, g, g) float64 of one raw image for targets (K,), and the facts."""
        tf, _ = tf_and_keras()
        image = np.asarray(image, dtype=np.float32)
        image_t = tf.constant(image)
        baseline_t = tf.constant(baseline_image(image, self.options.baseline))
        targets_t = tf.constant(np.asarray(targets, dtype=np.int32))
        outputs = np.empty((self.forwards, len(targets)), dtype=np.float64)
        for chunk in self.evaluation_chunks(self.forwards):
            rows = design_rows(self.a, self.b, chunk.index)
            result = self._perturbed(image_t, baseline_t, tf.constant(rows), targets_t).numpy()
            outputs[chunk.index[: chunk.real]] = result[: chunk.real]
            if report is not None:
                report(chunk.done)
        grid, designs = self.options.grid, self.options.designs
        indices = jansen_total_indices(outputs, designs, grid * grid)
        variance = outputs[:designs].var(axis=0, ddof=1)
        facts = SobolFacts(self.forwards, [float(v) for v in variance])
        return indices.reshape(len(targets), grid, grid), facts

    def attribute(
        self, image: np.ndarray, targets: np.ndarray, outputs: np.ndarray, report: Report
    ) -> tuple[np.ndarray, Facts]:
        return self.total_indices(image, targets, report)

    def normalize(self, maps: np.ndarray) -> np.ndarray:
        return np.stack([normalize_by_max(m) for m in maps])

    def scales(self, maps: np.ndarray) -> np.ndarray:
        return np.array([max_scale(m) for m in maps])

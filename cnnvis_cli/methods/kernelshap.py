"""KernelSHAP over superpixels: Shapley values from a weighted linear regression on coalitions.

Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017 (Theorem 2,
the Shapley kernel).

The M segments of the image (``--segments``, ``methods/segments.py``) are the players; the value
of a coalition z in {0, 1}^M is the model's output for the target (a probability for softmax
heads) on the image whose removed segments are filled with the baseline: v(z) = f_c(h(z)), with
v(0) = f_c(baseline) and v(1) = f_c(image). With the Shapley kernel::

    pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))              0 < |z| < M

the values phi solve the weighted least squares problem

    min_phi  sum_z pi(z) (v(z) - v(0) - z . phi)^2    subject to  sum_j phi_j = v(1) - v(0)

exactly: the constraint (efficiency) eliminates phi_M = (v(1) - v(0)) - sum_{j<M} phi_j, and the
remaining M - 1 unknowns are a weighted least squares solve (``numpy.linalg.lstsq`` on
sqrt(pi)-scaled rows), the same reduction as the ``shap`` package's ``KernelExplainer``. When
every coalition is evaluated the solution is exactly the Shapley values of v.

Coalitions (``--samples`` of them, besides the empty and full ones): the ``shap`` package's
plan. The kernel mass of each coalition size s (paired with M - s) is spread over the sizes
from the outside in; a size whose every coalition (and complement) fits the remaining budget
is enumerated completely with weight pi's share / count, and the rest of the budget is drawn at
random (a size by its remaining kernel mass, then a uniformly random coalition of that size, and
its complement), repeated draws adding weight, the drawn weights rescaled to the remaining mass.
With samples >= 2^M - 2 every coalition is enumerated (exact). The random draws come from NumPy's
``default_rng`` seeded with (``--seed``, M): the plan is a function of (seed, M, samples), the
same for every image with M segments and independent of batching. The coalition images are built
and scored ``--eval-batch`` at a time (``methods/segments.py``).

Differences from ``shap``: no background data set (the removed segments get one baseline image:
a single-reference "interventional" value function, as shap's image maskers do); no l1
feature selection (``l1_reg``): all M segments get a value; a repeated draw adds weight to the
coalition and its complement as in shap, but the complement is found by value (shap assumes it
sits in the next row, which is not so when the budget ran out between the two). The map paints
each segment with its value, divided by max |phi| (signed, in [-1, 1]).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from cnnvis_cli.methods.base import Facts
from cnnvis_cli.methods.perturbation import Report, parse_baseline
from cnnvis_cli.methods.segments import CoalitionMethod, SegmentOptions, segment_map
from cnnvis_cli.options import check_range, option


@dataclass(frozen=True)
class KernelShapOptions(SegmentOptions):
    samples: int = option(
        2048,
        "Coalitions evaluated per image (besides the empty and full ones).",
        metavar="N",
        min=1,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("--samples", self.samples, 1)
        object.__setattr__(self, "baseline", parse_baseline(self.baseline, "kernelshap"))


@dataclass(frozen=True)
class ShapleyFacts(Facts):
    """Segments M, coalitions evaluated, whether all were (exact Shapley values), and the
    target outputs of the baseline image v(0) (the values sum to output - baseline_output)."""

    segments: int
    coalitions: int
    exact: bool
    baseline_output: list[float]


def shapley_kernel(features: int, size: int) -> float:
    """pi(z) for |z| = size among M = features (infinite for the empty and full coalitions)."""
    if size in (0, features):
        return math.inf
    return (features - 1) / (math.comb(features, size) * size * (features - size))


def shapley_plan(features: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Coalitions (n, M) float64 0/1, never empty or full, their weights (n,) summing to 1, and
    whether every coalition is in (see the module docstring)."""
    m = features
    if m < 2:
        return np.zeros((0, m)), np.zeros(0), True
    sizes = math.ceil((m - 1) / 2)
    paired = (m - 1) // 2
    mass = np.array([(m - 1) / (s * (m - s)) for s in range(1, sizes + 1)])
    mass[:paired] *= 2
    mass /= mass.sum()
    rows: list[np.ndarray] = []
    weights: list[float] = []
    left = samples
    remaining = mass.copy()
    full = 0
    for size in range(1, sizes + 1):
        twin = size <= paired
        count = math.comb(m, size) * (2 if twin else 1)
        if left * remaining[size - 1] / count < 1.0 - 1e-8:
            break
        full += 1
        left -= count
        if remaining[size - 1] < 1.0:
            remaining /= 1.0 - remaining[size - 1]
        weight = mass[size - 1] / math.comb(m, size) / (2 if twin else 1)
        for members in itertools.combinations(range(m), size):
            row = np.zeros(m)
            row[list(members)] = 1.0
            rows.append(row)
            weights.append(weight)
            if twin:
                rows.append(1.0 - row)
                weights.append(weight)
    fixed = len(rows)
    left = samples - fixed
    if full < sizes and left > 0:
        rng = np.random.default_rng([seed % 2**64, m])
        odds = mass.copy()
        odds[:paired] /= 2  # each draw of a paired size adds two coalitions
        odds = odds[full:] / odds[full:].sum()
        draws = rng.choice(len(odds), 4 * left, p=odds)
        seen: dict[bytes, int] = {}
        for draw in draws:
            if left <= 0:
                break
            size = int(draw) + full + 1
            row = np.zeros(m)
            row[rng.permutation(m)[:size]] = 1.0
            pair = [row, 1.0 - row] if size <= paired else [row]
            for number, member in enumerate(pair):
                key = member.tobytes()
                if key in seen:
                    weights[seen[key]] += 1.0
                elif left > 0 and (number == 0 or pair[0].tobytes() in seen):
                    seen[key] = len(rows)
                    rows.append(member)
                    weights.append(1.0)
                    left -= 1
        drawn = np.asarray(weights[fixed:])
        if len(drawn):
            weights[fixed:] = list(drawn * mass[full:].sum() / drawn.sum())
    coalitions = np.asarray(rows, dtype=np.float64).reshape(-1, m)
    return coalitions, np.asarray(weights, dtype=np.float64), full == sizes


def kernel_shap_values(
    coalitions: np.ndarray,
    weights: np.ndarray,
    values: np.ndarray,
    full: np.ndarray,
    empty: np.ndarray,
) -> np.ndarray:
    """phi (K, M): the efficiency-constrained weighted least squares solution.

    ``coalitions`` (n, M), ``weights`` (n,), ``values`` (n, K) the outputs of the coalitions,
    ``full`` / ``empty`` (K,) the outputs of the image and of the baseline.
    """
    coalitions = np.asarray(coalitions, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    delta = np.asarray(full, dtype=np.float64) - np.asarray(empty, dtype=np.float64)
    m = coalitions.shape[1]
    if m == 1 or len(coalitions) == 0:
        return np.repeat(delta[:, None] / m, m, axis=1)
    last = coalitions[:, -1:]
    design = coalitions[:, :-1] - last  # (n, M - 1)
    target = values - np.asarray(empty)[None, :] - last * delta[None, :]  # (n, K)
    scale = np.sqrt(np.asarray(weights, dtype=np.float64))[:, None]
    solved, *_ = np.linalg.lstsq(design * scale, target * scale, rcond=None)  # (M - 1, K)
    return np.concatenate([solved, (delta - solved.sum(axis=0))[None, :]]).T


class KernelShap(CoalitionMethod):
    """KernelSHAP over SLIC superpixels or a grid (signed map: each segment's Shapley value)."""

    name = "kernelshap"
    title = "KernelSHAP"
    options_type = KernelShapOptions

    def shapley_values(
        self, image: np.ndarray, targets: np.ndarray, report: Report = None
    ) -> tuple[np.ndarray, np.ndarray, ShapleyFacts]:
        """phi (K, M) float64 of one raw image for targets (K,), its labels (h, w), facts."""
        labels = self.labels(image)
        m = int(labels.max()) + 1
        coalitions, weights, exact = shapley_plan(m, self.options.samples, self.options.seed)
        rows = np.concatenate([np.zeros((1, m)), np.ones((1, m)), coalitions])
        outputs = self.coalition_outputs(image, labels, rows, targets, report)
        empty, full = outputs[0], outputs[1]
        phi = kernel_shap_values(coalitions, weights, outputs[2:], full, empty)
        facts = ShapleyFacts(m, len(coalitions), bool(exact), [float(v) for v in empty])
        return phi, labels, facts

    def attribute(
        self, image: np.ndarray, targets: np.ndarray, outputs: np.ndarray, report: Report
    ) -> tuple[np.ndarray, Facts]:
        phi, labels, facts = self.shapley_values(image, targets, report)
        return segment_map(phi, labels), facts

"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci, ICML 2022, "A Consistent
and Efficient Evaluation Strategy for Attribution Methods").

Removing pixels by painting them black tells the model *where* they were (the mask's shape leaks
the ranking), so deletion-style curves partly measure the mask. ROAD removes pixels by **noisy
linear imputation**: every removed pixel becomes the weighted mean of its 8 neighbours (weight
1/6 for the 4 edge neighbours, 1/12 for the 4 diagonal ones, renormalised over the neighbours
inside the image), all removed pixels at once — the sparse linear system, one row per removed
pixel i with neighbours N(i) and known pixels K::

    (sum_{j in N(i)} w_ij) x_i - sum_{j in N(i) \\ K} w_ij x_j = sum_{j in N(i) & K} w_ij I_j

solved per channel with ``scipy.sparse.linalg.spsolve``, then Gaussian noise of standard
deviation 0.01 on the [0, 1] scale (2.55 raw levels) is added to the imputed pixels (seeded).

For each removal percentage p in 10, 20, ..., 90 the k = round(p n / 100) pixels ranked most
(MoRF) or least (LeRF) relevant by the map (ties by pixel index, as ``deletion``) are imputed,
and the change of the class's output (a probability for softmax heads) is recorded::

    road_morf = mean_p f_c(x with the top p % imputed)    - f_c(x)   (lower is better)
    road_lerf = mean_p f_c(x with the bottom p % imputed) - f_c(x)   (higher is better)
    road      = (road_lerf - road_morf) / 2                            (higher is better)

``road`` is pytorch-grad-cam's ``ROADCombined``; its MoRF at "percentile p" keeps the pixels
below the map's p-th percentile, i.e. removes the top 100 - p %, which over the symmetric set of
percentiles averages to the same mean. cnnvis removes exactly k pixels by rank, where a
percentile threshold removes a block of tied values together. The imputed images (18 per image)
go through the model in compiled chunks of ``--eval-batch``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnvis_cli.evaluation.metrics.base import Metric, Scorer, validate
from cnnvis_cli.evaluation.metrics.deletion_insertion import rank_map

PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
NOISE = 0.01 * 255.0  # 0.01 on the [0, 1] scale, as ROAD's NoisyLinearImputer
NEIGHBOURS = (
    (-1, -1, 1 / 12),
    (-1, 0, 1 / 6),
    (-1, 1, 1 / 12),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (1, 1, 1 / 12),
)


def impute(
    image: np.ndarray, removed: np.ndarray, noise: float = 0.0, rng: Any = None
) -> np.ndarray:
    """``image`` (h x w x c) with the ``removed`` pixels (h x w bool) linearly imputed from
    their neighbours (plus Gaussian noise of std ``noise`` on them)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    image = np.asarray(image, dtype=np.float64)
    height, width, channels = image.shape
    flat_removed = np.asarray(removed, dtype=bool).ravel()
    unknown = np.flatnonzero(flat_removed)
    count = unknown.size
    result = image.reshape(-1, channels).copy()
    if count == 0:
        return result.reshape(image.shape)
    if count == flat_removed.size:
        raise ValueError("cannot impute an image with every pixel removed")
    variable = np.full(flat_removed.size, -1, dtype=np.int64)
    variable[unknown] = np.arange(count)
    rows, cols = np.divmod(unknown, width)
    diagonal = np.zeros(count)
    rhs = np.zeros((count, channels))
    entries_i, entries_j, entries_w = [], [], []
    for dr, dc, weight in NEIGHBOURS:
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        diagonal[inside] += weight
        source = np.flatnonzero(inside)
        neighbour = r[inside] * width + c[inside]
        hidden = flat_removed[neighbour]
        rhs[source[~hidden]] += weight * result[neighbour[~hidden]]
        entries_i.append(source[hidden])
        entries_j.append(variable[neighbour[hidden]])
        entries_w.append(np.full(int(hidden.sum()), -weight))
    i = np.concatenate([np.arange(count), *entries_i])
    j = np.concatenate([np.arange(count), *entries_j])
    w = np.concatenate([diagonal, *entries_w])
    system = coo_matrix((w, (i, j)), shape=(count, count)).tocsc()
    solution = np.asarray(spsolve(system, rhs)).reshape(count, channels)
    if noise > 0:
        rng = rng if rng is not None else np.random.default_rng()
        solution = solution + rng.normal(0.0, noise, solution.shape)
    result[unknown] = solution
    return result.reshape(image.shape)


class ROAD(Metric):
    """MoRF, LeRF and their combination with noisy linear imputation."""

    keys = ("road_morf", "road_lerf", "road")
    noise = NOISE

    def __init__(self, adapter: Any, settings: Any = None, names: Any = None) -> None:
        super().__init__(adapter, settings, names)
        self.scorer = Scorer(adapter, self.settings.batch_size)

    def params(self) -> dict[str, Any]:
        return {"road": {"percentages": list(PERCENTAGES), "noise_raw_std": self.noise}}

    def imputed(self, image: np.ndarray, saliency: np.ndarray) -> np.ndarray:
        """(2 P, h, w, c): the MoRF images for each percentage, then the LeRF ones."""
        ranks = rank_map(saliency)
        pixels = ranks.size
        images = []
        for order, most_first in enumerate((True, False)):
            for p in PERCENTAGES:
                k = (2 * p * pixels + 100) // 200  # round(p n / 100), halves up
                removed = ranks < k if most_first else ranks >= pixels - k
                rng = np.random.default_rng([self.settings.seed, p, order])
                images.append(impute(image, removed, self.noise, rng))
        return np.stack(images)

    def evaluate(self, image: Any, saliency: Any, class_index: int) -> dict[str, float]:
        image, saliency = validate(self.adapter, image, saliency, class_index)
        stack = np.concatenate([image[None].astype(np.float64), self.imputed(image, saliency)])
        scores = self.scorer.stack(stack, class_index)
        changes = scores[1:] - scores[0]
        count = len(PERCENTAGES)
        morf, lerf = float(changes[:count].mean()), float(changes[count:].mean())
        return {"road_morf": morf, "road_lerf": lerf, "road": (lerf - morf) / 2}

"""VarGrad and SquareGrad: the variance and the mean square of noisy input gradients.

Adebayo, Gilmer, Goodfellow & Kim, "Local Explanation Methods for Deep Neural Networks Lack
Sensitivity to Parameter Randomization", ICLR workshop 2018 (VarGrad; also in "Sanity Checks for
Saliency Maps", NeurIPS 2018); Hooker, Erhan, Kindermans & Kim, "A Benchmark for
Interpretability Methods in Deep Neural Networks", NeurIPS 2019 (SquareGrad, "SmoothGrad-SQ").

With SmoothGrad's noisy copies (``smoothgrad.py``: the same ``--samples``, ``--noise`` — std
noise x 255 on raw pixels — and ``--seed``, so copy s of every image carries the same noise
whatever the batching) and G_s = d y^c / d x at x + eps_s (the logit, raw pixels)::

    VarGrad:     V = n / (n - 1) * ( 1/n sum_s G_s^2  -  (1/n sum_s G_s)^2 )    (unbiased)
    SquareGrad:  Q = 1/n sum_s G_s^2
    M_ij        = max_ch V_ij,ch   (or Q)

min-max normalized to [0, 1] (a heatmap). VarGrad's unbiased factor n / (n - 1) is Xplique's
(Captum's NoiseTunnel ``vargrad`` takes the biased one); the normalization removes it, but it
needs n >= 2, so VarGrad refuses ``--samples 1``. The channel reduction (max, as our SmoothGrad
and saliency) differs from Xplique's default reducer (mean over channels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnvis_cli.methods.smoothgrad import NoisyGradients, SmoothGradOptions


@dataclass(frozen=True)
class VarGradOptions(SmoothGradOptions):
    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 2:
            raise ValueError(f"--samples must be at least 2 for a variance, got {self.samples}")


class VarGrad(NoisyGradients):
    """VarGrad: the (unbiased) variance of the noisy gradients."""

    name = "vargrad"
    title = "VarGrad"
    options_type = VarGradOptions

    def statistic(self, mean: np.ndarray, square_mean: np.ndarray) -> np.ndarray:
        samples = self.options.samples
        return np.maximum(square_mean - mean**2, 0.0) * samples / (samples - 1)


class SquareGrad(NoisyGradients):
    """SquareGrad (SmoothGrad-SQ): the mean of the squared noisy gradients."""

    name = "squaregrad"
    title = "SquareGrad"

    def statistic(self, mean: np.ndarray, square_mean: np.ndarray) -> np.ndarray:
        return square_mean

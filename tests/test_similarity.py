"""The sanity check's similarity measures against independent implementations (SciPy,
scikit-image) and their edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from skimage.feature import hog as skimage_hog
from skimage.metrics import structural_similarity

from cnnvis_cli.evaluation.similarity import (
    MEASURES,
    hog,
    hog_cell_size,
    normalize_absolute,
    normalize_signed,
    pearson,
    similarities,
    spearman,
    ssim,
)


def pair(shape, seed):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    b = np.clip(a + 0.4 * rng.standard_normal(shape), 0, 1)  # clipping makes ties at 0 and 1
    a[:3] = 0.0  # a block of ties
    return a, b


@pytest.mark.parametrize("shape", [(96, 96), (30, 41), (24, 24), (17, 20)])
def test_measures_match_scipy_and_scikit_image(shape):
    a, b = pair(shape, seed=sum(shape))
    assert spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert ssim(a, b) == pytest.approx(structural_similarity(a, b, data_range=1.0), abs=1e-12)
    cell = hog_cell_size(*shape)
    reference = skimage_hog(
        a, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(3, 3), block_norm="L2-Hys"
    )
    np.testing.assert_allclose(hog(a), reference, atol=1e-6)


def test_identical_maps_are_one_and_unrelated_maps_are_not():
    rng = np.random.default_rng(0)
    for original in (rng.random((32, 40)), rng.standard_normal((32, 40, 3))):  # heatmap, gradient
        values = similarities(original, original.copy())
        assert set(values) == set(MEASURES)
        assert all(v == pytest.approx(1.0) for v in values.values())
    unrelated = similarities(rng.random((48, 48)), rng.random((48, 48)))
    assert abs(unrelated["spearman_abs"]) < 0.1 and unrelated["ssim"] < 0.2


def test_constant_maps_and_normalisation():
    flat = np.zeros((24, 24))
    assert spearman(flat, flat) == 1.0  # nothing to disagree on
    assert spearman(flat, np.arange(24 * 24.0).reshape(24, 24)) == 0.0
    assert pearson(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    values = np.arange(1000.0).reshape(25, 40)
    normalized = normalize_absolute(values)  # (a - min) / (p99 - min), clipped
    assert normalized.min() == 0.0 and normalized.max() == 1.0
    assert (normalized == 1.0).sum() == 10  # the top 1 % saturate (p99 = 989.01)
    gradient = np.stack([values, -values, values], axis=2)  # |g| summed over channels
    np.testing.assert_allclose(normalize_absolute(gradient), normalized)
    signed = normalize_signed(values - 500.0)  # s / p99(|s|), clipped to [-1, 1]
    span = np.percentile(np.abs(values - 500.0), 99)
    np.testing.assert_allclose(signed, np.clip((values - 500.0) / span, -1, 1))
    assert signed.min() == -1.0 and signed.max() == 1.0
    assert not normalize_signed(flat).any()

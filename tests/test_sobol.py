"""Sobol attribution against a brute-force Jansen estimator on the same design, and on a model
whose answer is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.methods.baselines import gaussian_blur
from cnnvis_cli.methods.sobol import Sobol, SobolOptions, sobol_design
from tests.test_rise import build_model, build_quadrant_model

SIZE = (18, 22)


def reference_indices(model, image, targets, grid, designs, seed, baseline, scale=255.0):
    """Jansen's total indices one design row at a time, with loops and nearest upsampling."""
    a, b = sobol_design(grid, designs, seed)
    height, width = image.shape[:2]
    cell_y = np.floor(np.arange(height) * grid / height).astype(int)
    cell_x = np.floor(np.arange(width) * grid / width).astype(int)

    def f(row):
        mask = row.reshape(grid, grid)[cell_y][:, cell_x][..., None].astype(np.float64)
        perturbed = image * mask + baseline * (1 - mask)
        return model(perturbed[None].astype(np.float32) / scale).numpy()[0, targets]

    fa = np.array([f(a[j]) for j in range(designs)], dtype=np.float64)  # (N, K)
    variance = fa.var(axis=0, ddof=1)
    indices = np.zeros((len(targets), grid * grid))
    for i in range(grid * grid):
        total = np.zeros(len(targets))
        for j in range(designs):
            replicated = a[j].copy()
            replicated[i] = b[j, i]
            total += (fa[j] - f(replicated)) ** 2
        indices[:, i] = total / (2 * designs * variance)
    return indices.reshape(len(targets), grid, grid), variance


def test_design_is_seeded_and_in_the_unit_cube():
    a, b = sobol_design(3, 16, seed=2)
    assert a.shape == b.shape == (16, 9)
    assert a.min() >= 0 and a.max() < 1 and b.min() >= 0 and b.max() < 1
    again, _ = sobol_design(3, 16, seed=2)
    np.testing.assert_array_equal(again, a)
    other, _ = sobol_design(3, 16, seed=3)
    assert not np.array_equal(other, a)
    # a (t, m, s)-net: each column of A has one point in each of the 16 strata of [0, 1)
    assert all(len(set(np.floor(a[:, i] * 16).astype(int))) == 16 for i in range(9))


@pytest.mark.parametrize(
    ("grid", "designs", "eval_batch", "baseline", "top_k"),
    [(3, 8, 64, "zero", 1), (4, 4, 9, "blur", 2)],
)
def test_matches_brute_force_jansen(keras_mod, grid, designs, eval_batch, baseline, top_k):
    model = build_model(keras_mod, SIZE)
    image = np.random.default_rng(grid).uniform(0, 255, (*SIZE, 3)).astype(np.float32)
    method = Sobol.create(
        ModelAdapter(model, preprocess="unit"),
        grid=grid,
        designs=designs,
        baseline=baseline,
        seed=1,
        top_k=top_k,
        eval_batch=eval_batch,
    )
    explanation = method.explain(image[None])[0]
    targets = explanation.targets
    got, facts = method.total_indices(image, np.asarray(targets))
    fill = np.zeros(3) if baseline == "zero" else gaussian_blur(image, min(SIZE) / 20)
    expected, variance = reference_indices(model, image, targets, grid, designs, 1, fill)
    assert expected.max() > 1e-3
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(facts.output_variance, variance, rtol=1e-4)
    assert facts.forwards == designs * (grid * grid + 1)
    for k in range(top_k):
        assert explanation.maps[k].shape == (grid, grid)
        np.testing.assert_allclose(explanation.maps[k], expected[k] / expected[k].max(), atol=1e-4)
    assert method.trace_counts()["perturbed_fn"] == 1


def test_cells_the_model_never_reads_get_exactly_zero(keras_mod):
    """The class-0 score reads the top-left quadrant only: on a 4 x 4 grid of a 16 x 16 image,
    the 12 other cells leave every output unchanged, so their total index is exactly 0."""
    model = build_quadrant_model(keras_mod)
    image = np.random.default_rng(0).uniform(50, 255, (16, 16, 3)).astype(np.float32)
    adapter = ModelAdapter(model, preprocess="unit")
    # black fill: every quadrant cell's pixels (50..255) then move the score
    method = Sobol.create(adapter, grid=4, designs=16, class_index=0, baseline="zero")
    indices, _ = method.total_indices(image, np.array([0]))
    inside = indices[0, :2, :2]
    outside = indices[0].copy()
    outside[:2, :2] = 0
    assert np.abs(outside).max() < 1e-6
    assert inside.min() > 0.05  # each quadrant cell carries part of a linear model's variance


def test_options_are_validated():
    with pytest.raises(ValueError, match="power of two"):
        SobolOptions(designs=24)
    with pytest.raises(ValueError, match="--baseline"):
        SobolOptions(baseline="nope")

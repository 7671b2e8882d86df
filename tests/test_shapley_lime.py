"""KernelSHAP and LIME over segments: exact Shapley values by brute force, additive models whose
answers are known, the coalition plan and the segmenters."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.methods.kernelshap import KernelShap, KernelShapOptions, shapley_plan
from cnnvis_cli.methods.lime import Lime, LimeOptions, cosine_kernel
from cnnvis_cli.methods.segments import grid_labels, slic_labels

SIZE = (18, 24)


def build_conv_model(keras, size=SIZE, classes: int = 3, seed: int = 0):
    """conv -> max-pool -> flatten -> dense softmax: a nonlinear, position-dependent model."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    logits = keras.layers.Dense(
        classes, kernel_initializer=keras.initializers.RandomNormal(0, 0.3)
    )(x)
    return keras.Model(inputs, keras.layers.Softmax()(logits))


def build_linear_model(keras, size=SIZE, classes: int = 2, seed: int = 0):
    """output_c = sum_p W_c[p] x_p (x in [0, 1]): additive over any segmentation."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*size, 3))
    x = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(classes, use_bias=False)
    model = keras.Model(inputs, dense(x))
    weights = np.random.default_rng(seed).normal(0, 0.05, (size[0] * size[1] * 3, classes))
    dense.set_weights([weights.astype(np.float32)])
    return model, weights.reshape(*size, 3, classes)


@pytest.fixture(scope="module")
def conv_model(keras_mod):
    return build_conv_model(keras_mod)


@pytest.fixture(scope="module")
def linear_model(keras_mod):
    return build_linear_model(keras_mod)


def raw_image(size=SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (*size, 3)).astype(np.float32)


def coalition_image(image, baseline, labels, kept):
    keep = np.isin(labels, list(kept))[..., None]
    return np.where(keep, image, baseline)


def brute_force_shapley(model, image, baseline, labels, targets):
    """phi_j = sum over S not holding j of |S|! (M - |S| - 1)! / M! (v(S + j) - v(S))."""
    m = int(labels.max()) + 1
    subsets = [frozenset(s) for r in range(m + 1) for s in itertools.combinations(range(m), r)]
    batch = np.stack([coalition_image(image, baseline, labels, s) for s in subsets]) / 255.0
    outputs = model(batch.astype(np.float32)).numpy()[:, targets].astype(np.float64)
    value = {s: outputs[i] for i, s in enumerate(subsets)}
    phi = np.zeros((m, len(targets)))
    for j in range(m):
        for s in subsets:
            if j in s:
                continue
            weight = math.factorial(len(s)) * math.factorial(m - len(s) - 1) / math.factorial(m)
            phi[j] += weight * (value[s | {j}] - value[s])
    return phi.T, value[frozenset()], value[frozenset(range(m))]


# -- segmenters ------------------------------------------------------------------------------


def test_grid_labels_are_row_major_cells():
    labels = grid_labels(18, 24, 12)  # 3 rows x 4 columns of 6 x 6 cells
    rows, cols = np.mgrid[0:18, 0:24]
    np.testing.assert_array_equal(labels, (rows // 6) * 4 + cols // 6)
    wide = grid_labels(10, 40, 4)  # aspect-aware: 1 row x 4 columns
    assert wide.max() == 3 and (wide[0] == wide[-1]).all()


def test_slic_follows_colour_edges_and_numbers_segments_densely():
    image = np.zeros((40, 40, 3), np.float32)
    image[:, 20:] = [250.0, 30.0, 30.0]
    labels = slic_labels(image, 8)
    assert labels.dtype == np.int32 and labels.shape == (40, 40)
    assert set(np.unique(labels)) == set(range(labels.max() + 1)) and labels.max() >= 1
    left, right = set(np.unique(labels[:, :20])), set(np.unique(labels[:, 20:]))
    assert not left & right  # no superpixel straddles the colour edge
    gray = slic_labels(image[:, :, :1] + 10.0, 4)
    assert gray.shape == (40, 40)


# -- the coalition plan ------------------------------------------------------------------------


def test_plan_enumerates_every_coalition_with_shapley_kernel_weights():
    m = 6
    coalitions, weights, exact = shapley_plan(m, 2**m - 2, seed=0)
    assert exact and len(coalitions) == 2**m - 2
    assert len({row.tobytes() for row in coalitions}) == len(coalitions)
    sizes = coalitions.sum(axis=1)
    assert sizes.min() == 1 and sizes.max() == m - 1
    kernel = np.array([(m - 1) / (math.comb(m, int(s)) * s * (m - s)) for s in sizes])
    np.testing.assert_allclose(weights, kernel / kernel.sum(), rtol=1e-12)


def test_sampled_plan_is_seeded_unique_and_sums_to_one():
    coalitions, weights, exact = shapley_plan(20, 300, seed=4)
    assert not exact and len(coalitions) == 300
    assert len({row.tobytes() for row in coalitions}) == 300
    sizes = coalitions.sum(axis=1)
    assert sizes.min() >= 1 and sizes.max() <= 19
    assert (coalitions[sizes == 1].sum(axis=0) == 1).all()  # size 1 and 19: enumerated
    assert weights.sum() == pytest.approx(1.0)
    again, same, _ = shapley_plan(20, 300, seed=4)
    np.testing.assert_array_equal(again, coalitions)
    np.testing.assert_array_equal(same, weights)
    other, _, _ = shapley_plan(20, 300, seed=5)
    assert not np.array_equal(other, coalitions)


# -- KernelSHAP ------------------------------------------------------------------------------


@pytest.mark.parametrize(("baseline", "eval_batch"), [("mean", 64), ("zero", 5)])
def test_kernelshap_equals_brute_force_shapley_values(conv_model, baseline, eval_batch):
    """Six grid segments, every coalition evaluated: the values are the exact Shapley values of
    the (nonlinear) model, and they sum to f(x) - f(baseline)."""
    image = raw_image(seed=1)
    method = KernelShap.create(
        ModelAdapter(conv_model, preprocess="unit"),
        segments="grid",
        n_segments=6,
        samples=100,
        baseline=baseline,
        top_k=2,
        eval_batch=eval_batch,
    )
    explanation = method.explain(image[None])[0]
    targets = explanation.targets
    phi, labels, facts = method.shapley_values(image, np.asarray(targets))
    assert labels.max() + 1 == 6 and facts.exact and facts.coalitions == 62
    fill = image.mean(axis=(0, 1)) if baseline == "mean" else np.zeros(3)
    expected, empty, full = brute_force_shapley(conv_model, image, fill, labels, targets)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(phi, expected, atol=2e-6)
    np.testing.assert_allclose(phi.sum(axis=1), full - empty, atol=1e-6)
    np.testing.assert_allclose(facts.baseline_output, empty, atol=1e-6)
    for k in range(2):
        painted = expected[k][labels]
        np.testing.assert_allclose(explanation.maps[k], painted / np.abs(painted).max(), atol=1e-4)
    assert explanation.kind == "signed"


def test_sampled_kernelshap_is_exact_on_an_additive_model(linear_model):
    """12 segments and 60 of the 4094 coalitions: an additive model is fitted exactly, so the
    values are its per-segment contributions."""
    model, weights = linear_model
    image = raw_image(seed=2)
    method = KernelShap.create(
        ModelAdapter(model, preprocess="unit"),
        segments="grid",
        n_segments=12,
        samples=60,
        baseline="gray",
        class_index=1,
    )
    phi, labels, facts = method.shapley_values(image, np.array([1]))
    assert facts.segments == 12 and not facts.exact and facts.coalitions == 60
    contribution = (image - 127.5) / 255.0 * weights[..., 1]  # per pixel and channel
    expected = np.array([contribution[labels == j].sum() for j in range(12)])
    np.testing.assert_allclose(phi[0], expected, atol=1e-5)


def test_kernelshap_runs_on_slic_superpixels(conv_model):
    blocks = np.random.default_rng(3).uniform(0, 255, (3, 4, 3))
    image = np.kron(blocks, np.ones((6, 6, 1))).astype(np.float32)  # 12 flat colour blocks
    method = KernelShap.create(
        ModelAdapter(conv_model, preprocess="unit"), n_segments=10, samples=40
    )
    explanation = method.explain(image[None])[0]
    facts = explanation.facts
    assert 2 <= facts.segments <= 20
    assert explanation.maps[0].shape == SIZE
    assert np.abs(explanation.maps[0]).max() == pytest.approx(1.0, abs=1e-6)


# -- LIME ------------------------------------------------------------------------------------


def test_cosine_kernel_matches_the_lime_formula():
    rng = np.random.default_rng(0)
    coalitions = (rng.uniform(size=(50, 9)) < 0.5).astype(float)
    coalitions[0] = 1.0
    ones = np.ones(9)
    norms = np.linalg.norm(coalitions, axis=1)
    cosine = np.divide(coalitions @ ones, norms * 3.0, out=np.zeros(50), where=norms > 0)
    expected = np.sqrt(np.exp(-((1.0 - cosine) ** 2) / 0.25**2))
    np.testing.assert_allclose(cosine_kernel(coalitions, 0.25), expected, rtol=1e-12)
    assert cosine_kernel(coalitions, 0.25)[0] == 1.0


def test_lime_recovers_the_coefficients_of_an_additive_model(linear_model):
    model, weights = linear_model
    image = raw_image(seed=5)
    method = Lime.create(
        ModelAdapter(model, preprocess="unit"),
        segments="grid",
        n_segments=12,
        samples=1000,
        baseline="zero",
        class_index=0,
        eval_batch=128,
    )
    beta, labels, facts = method.surrogate(image, np.array([0]))
    contribution = image / 255.0 * weights[..., 0]
    expected = np.array([contribution[labels == j].sum() for j in range(12)])
    # ridge (alpha = 1) shrinks the exact coefficients by well under 1 % at 1000 samples
    np.testing.assert_allclose(beta[0], expected, atol=0.01 * np.abs(expected).max())
    assert facts.surrogate_r2[0] > 0.999
    assert facts.surrogate_intercept[0] == pytest.approx(0.0, abs=0.01 * np.abs(expected).max())


def test_lime_samples_are_seeded_and_independent_of_batching(conv_model):
    image = raw_image(seed=6)
    adapter = ModelAdapter(conv_model, preprocess="unit")
    labels = grid_labels(*SIZE, 8)

    def draw(**kwargs):
        options = {"segments": "grid", "n_segments": 8, "samples": 30, **kwargs}
        eval_batch = options.pop("eval_batch", 64)
        method = Lime.create(adapter, eval_batch=eval_batch, class_index=0, **options)
        return method.draw_samples(image, labels, np.array([0]))

    coalitions, outputs = draw()
    assert (coalitions[0] == 1).all() and set(np.unique(coalitions)) == {0.0, 1.0}
    again, same = draw(eval_batch=7)
    np.testing.assert_array_equal(again, coalitions)
    np.testing.assert_allclose(same, outputs, atol=1e-6)
    longer, _ = draw(samples=45)
    np.testing.assert_array_equal(longer[:30], coalitions)
    other, _ = draw(seed=1)
    assert not np.array_equal(other, coalitions)
    kept = np.isin(labels, np.flatnonzero(coalitions[3]))[..., None]
    fill = image.mean(axis=(0, 1))
    direct = conv_model(np.where(kept, image, fill)[None] / 255.0).numpy()[0, 0]
    assert outputs[3, 0] == pytest.approx(direct, abs=1e-6)


def test_options_are_validated():
    with pytest.raises(ValueError, match="--segments"):
        LimeOptions(segments="quickshift")
    with pytest.raises(ValueError, match="--kernel-width"):
        LimeOptions(kernel_width=0)
    with pytest.raises(ValueError, match="--baseline"):
        KernelShapOptions(baseline="nope")

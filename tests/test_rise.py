"""RISE against a brute-force NumPy/OpenCV RISE on the same random grids, and its convergence."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.methods.rise import Rise, RiseOptions, rise_draws

SIZE = (18, 22)  # non-square, and not a multiple of the grid


def build_model(keras, size=SIZE, classes: int = 3, seed: int = 0):
    """conv -> max-pool -> flatten -> dense softmax: position-dependent outputs."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    logits = keras.layers.Dense(
        classes, kernel_initializer=keras.initializers.RandomNormal(0, 0.3)
    )(x)
    return keras.Model(inputs, keras.layers.Softmax()(logits))


def build_quadrant_model(keras, size=(16, 16)):
    """Linear head whose class-0 score is the mean of the top-left quadrant's pixels (0..1)."""
    inputs = keras.Input((*size, 3))
    quadrant = keras.layers.Cropping2D(((0, size[0] // 2), (0, size[1] // 2)))(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(quadrant)
    dense = keras.layers.Dense(2, use_bias=False)
    outputs = dense(pooled)
    dense.set_weights([np.array([[1 / 3, -1 / 3]] * 3, dtype=np.float32)])
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def model(keras_mod):
    return build_model(keras_mod)


def raw_images(count: int, size=SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, *size, 3)).astype(np.float32)


def reference_rise(model, image, targets, options: RiseOptions, baseline, scale=255.0):
    """Brute force, one mask at a time: the same grids and shifts, upsampled with OpenCV."""
    height, width = image.shape[:2]
    grid, n, p = options.grid, options.samples, options.keep_prob
    cell_h, cell_w = -(-height // grid), -(-width // grid)
    grids, shifts = rise_draws(options.seed, np.arange(n), grid, p, [cell_h, cell_w])
    grids, shifts = grids.numpy(), shifts.numpy()
    assert set(np.unique(grids)) <= {0.0, 1.0}
    assert (shifts >= 0).all() and (shifts < [cell_h, cell_w]).all()
    total = np.zeros((len(targets), height, width))
    for i in range(n):
        up = cv2.resize(
            grids[i].astype(np.float32),
            ((grid + 1) * cell_w, (grid + 1) * cell_h),
            interpolation=cv2.INTER_LINEAR,
        )
        dy, dx = shifts[i]
        mask = up[dy : dy + height, dx : dx + width].astype(np.float64)
        perturbed = image * mask[..., None] + baseline * (1 - mask[..., None])
        out = model(perturbed[None].astype(np.float32) / scale).numpy()[0]
        for k, c in enumerate(targets):
            total[k] += out[c] * mask
    return total / (n * p)


@pytest.mark.parametrize(
    ("grid", "samples", "eval_batch", "baseline", "top_k"),
    [(7, 40, 64, "zero", 1), (4, 33, 7, "gray", 2), (5, 20, 1, "mean", 1)],
)
def test_matches_brute_force_rise(model, grid, samples, eval_batch, baseline, top_k):
    image = raw_images(1, seed=grid)[0]
    options = RiseOptions(samples=samples, grid=grid, baseline=baseline, seed=3)
    method = Rise.create(
        ModelAdapter(model, preprocess="unit"),
        samples=samples,
        grid=grid,
        baseline=baseline,
        seed=3,
        top_k=top_k,
        eval_batch=eval_batch,
    )
    explanation = method.explain(image[None])[0]
    fill = {"zero": 0.0, "gray": 127.5, "mean": image.mean(axis=(0, 1))}[baseline]
    expected = reference_rise(model, image, explanation.targets, options, fill)
    got = method.saliency(image, np.asarray(explanation.targets))
    assert got.shape == (top_k, *SIZE)
    assert expected.max() - expected.min() > 1e-3  # the comparison below is meaningful
    np.testing.assert_allclose(got, expected, atol=2e-5)
    for k in range(top_k):
        low, high = expected[k].min(), expected[k].max()
        shown = explanation.maps[k]
        assert shown.dtype == np.float32 and shown.shape == SIZE
        np.testing.assert_allclose(shown, (expected[k] - low) / (high - low), atol=1e-3)
    assert method.trace_counts()["masked_fn"] == 1


def test_masks_do_not_depend_on_batching_or_sample_count(model):
    image = raw_images(1, seed=9)[0]
    adapter = ModelAdapter(model, preprocess="unit")
    a = Rise.create(adapter, samples=24, eval_batch=5, class_index=1).saliency(image, [1])
    b = Rise.create(adapter, samples=24, eval_batch=24, class_index=1).saliency(image, [1])
    np.testing.assert_allclose(a, b, atol=1e-6)
    # the first 24 masks of 48 are the same 24 masks: the sums agree
    c = Rise.create(adapter, samples=48, eval_batch=16, class_index=1)
    first, _ = rise_draws(0, np.arange(24), 7, 0.5, [3, 4])
    again, _ = rise_draws(0, np.arange(48), 7, 0.5, [3, 4])
    np.testing.assert_array_equal(first.numpy(), again.numpy()[:24])
    assert not np.allclose(c.saliency(image, [1]), a)  # more masks: a different estimate
    other = Rise.create(adapter, samples=24, seed=1, class_index=1).saliency(image, [1])
    assert not np.allclose(other, a)


def test_converges_on_a_model_that_only_sees_one_quadrant(keras_mod):
    """The class-0 score only reads the top-left quadrant: the saliency's correlation with that
    quadrant rises with the number of masks."""
    model = build_quadrant_model(keras_mod)
    image = np.full((16, 16, 3), 200.0, np.float32)
    adapter = ModelAdapter(model, preprocess="unit")
    truth = np.zeros((16, 16))
    truth[:8, :8] = 1.0
    correlations = []
    for samples in (8, 64, 1024):
        method = Rise.create(adapter, samples=samples, grid=4, class_index=0, eval_batch=128)
        saliency = method.saliency(image, [0])[0]
        correlations.append(np.corrcoef(saliency.ravel(), truth.ravel())[0, 1])
    assert correlations[0] < correlations[1] < correlations[2]
    assert correlations[2] > 0.8


def test_options_are_validated():
    with pytest.raises(ValueError, match="--keep-prob"):
        RiseOptions(keep_prob=0.0)
    with pytest.raises(ValueError, match="--baseline"):
        RiseOptions(baseline="purple")

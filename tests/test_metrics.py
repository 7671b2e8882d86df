"""Deletion / insertion AUCs against a naive one-step-at-a-time NumPy reference."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.evaluation.metrics.deletion_insertion import (
    FaithfulnessMetrics,
    rank_map,
    step_counts,
    trapezoid_auc,
)

TRAPEZOID = getattr(np, "trapezoid", None) or np.trapz  # NumPy < 2 names it trapz


def build_conv_model(keras, size, channels: int = 3, classes: int = 3, seed: int = 0):
    """Rescaling -> conv -> max-pool -> flatten -> dense softmax: position-dependent outputs."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*size, channels))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(classes, kernel_initializer=keras.initializers.RandomNormal(0, 0.3))(x)
    outputs = keras.layers.Softmax()(x)
    return keras.Model(inputs, outputs)


def reference(model, image, saliency, steps, metric):
    """Curves (steps + 1, C) of every class, one step image at a time, one model call each."""
    h, w, _ = image.shape
    n = h * w
    order = np.argsort(-saliency.ravel(), kind="stable")
    if metric == "deletion":
        start, end = image, np.zeros_like(image)
    else:
        sigma = max(h, w) / 20
        blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)
        start, end = blurred.reshape(image.shape), image
    curve = []
    for i in range(steps + 1):
        k = int(np.floor(i * n / steps + 0.5))
        current = start.reshape(n, -1).copy()
        current[order[:k]] = end.reshape(n, -1)[order[:k]]
        out = model(current.reshape(image.shape)[None], training=False).numpy()[0]
        curve.append(out.astype(np.float64))
    return np.stack(curve)


def raw_image(size, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (*size, channels)).astype(np.float32)


@pytest.mark.parametrize(
    ("size", "channels", "steps", "batch_size"),
    [
        ((10, 14), 3, 9, 4),  # 140 pixels / 9 steps; 10 step images in chunks of 4 (4+4+2)
        ((13, 7), 1, 6, 5),  # grayscale, 91 / 6 (halves are rounded up), 7 = 5 + 2
        ((5, 7), 3, 40, 16),  # more steps than pixels: repeated k values
        ((10, 14), 3, 1, 16),  # two points: the original and the fully changed image
    ],
)
def test_matches_naive_reference(keras_mod, size, channels, steps, batch_size):
    model = build_conv_model(keras_mod, size, channels=channels, seed=steps)
    adapter = ModelAdapter(model, preprocess="raw")
    evaluator = FaithfulnessMetrics(adapter, steps=steps, batch_size=batch_size, return_curves=True)
    rng = np.random.default_rng(steps)
    image = raw_image(size, channels, seed=steps)
    saliency = rng.integers(0, 5, size).astype(np.float32)  # many ties: stable order matters
    curves = {m: reference(model, image, saliency, steps, m) for m in ("deletion", "insertion")}
    for class_index in (0, 2):
        result = evaluator.evaluate(image, saliency, class_index)
        assert set(result) == {"deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve"}
        for metric, curve in curves.items():
            expected = TRAPEZOID(curve[:, class_index], dx=1.0 / steps)
            np.testing.assert_allclose(result[f"{metric}_curve"], curve[:, class_index], atol=1e-5)
            assert result[f"{metric}_auc"] == pytest.approx(expected, abs=1e-5)


def test_ranking_and_steps():
    saliency = np.array([[0.5, 1.0, 0.5], [0.0, 1.0, 0.2]])
    np.testing.assert_array_equal(rank_map(saliency), [[2, 0, 3], [5, 1, 4]])
    np.testing.assert_array_equal(step_counts(10, 4), [0, 3, 5, 8, 10])  # 2.5 -> 3, 7.5 -> 8
    np.testing.assert_array_equal(step_counts(5, 1), [0, 5])
    assert trapezoid_auc([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert trapezoid_auc([0.0, 1.0]) == pytest.approx(0.5)
    assert trapezoid_auc([1.0, 0.0, 0.0, 0.0]) == pytest.approx(1 / 6)


WINDOW = (slice(3, 7), slice(5, 9))  # rows 3..6, columns 5..8 of a 12 x 16 input


@pytest.fixture(scope="module")
def window_model(keras_mod):
    """Only a 4 x 4 window matters: p(class 1) = sigmoid(0.16 * (window mean - 200))."""
    keras = keras_mod
    inputs = keras.Input((12, 16, 3))
    x = keras.layers.Cropping2D(((3, 12 - 7), (5, 16 - 9)))(inputs)
    x = keras.layers.Flatten()(x)
    dense = keras.layers.Dense(2)
    x = dense(x)
    outputs = keras.layers.Softmax()(x)
    a, c = 0.16 / (2 * 48), 16.0  # logit gap 2a * sum(window) - 2c = 0.16 * (mean - 200)
    kernel = np.zeros((48, 2), np.float32)
    kernel[:, 0], kernel[:, 1] = -a, a
    dense.set_weights([kernel, np.array([c, -c], np.float32)])
    return keras.Model(inputs, outputs)


def test_perfect_map_beats_random_and_inverted(window_model):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 60, (12, 16, 3)).astype(np.float32)  # dark: the blur dims the window
    image[WINDOW] = rng.uniform(220, 250, (4, 4, 3))
    perfect = np.zeros((12, 16), np.float32)
    perfect[WINDOW] = 1.0
    perfect += rng.uniform(0, 0.1, perfect.shape).astype(np.float32)
    inverted = -perfect
    random_map = rng.uniform(0, 1, perfect.shape).astype(np.float32)
    evaluator = FaithfulnessMetrics(ModelAdapter(window_model, preprocess="raw"), steps=24)
    good, bad, noise = (evaluator.evaluate(image, m, 1) for m in (perfect, inverted, random_map))
    assert good["deletion_auc"] < noise["deletion_auc"] < bad["deletion_auc"]
    assert good["insertion_auc"] > noise["insertion_auc"] > bad["insertion_auc"]
    assert good["deletion_auc"] < 0.1 and bad["deletion_auc"] > 0.8
    assert good["insertion_auc"] > 0.8 and bad["insertion_auc"] < 0.2


def test_traced_once_progress_and_selection(keras_mod):
    model = build_conv_model(keras_mod, (8, 8), seed=3)
    adapter = ModelAdapter(model, preprocess="raw")
    evaluator = FaithfulnessMetrics(adapter, steps=10, batch_size=4)  # 11 = 4 + 4 + 3 per metric
    fractions: list[float] = []
    for seed in range(4):  # different images, maps and classes
        fractions.clear()
        image = raw_image((8, 8), seed=seed)
        saliency = np.random.default_rng(seed).uniform(size=(8, 8))
        result = evaluator.evaluate(image, saliency, seed % 3, progress=fractions.append)
        assert set(result) == {"deletion_auc", "insertion_auc"}
        assert all(0.0 <= v <= 1.0 for v in result.values())
    assert evaluator.trace_counts() == {"step_outputs": 1}
    assert fractions == pytest.approx([(i + 1) / 6 for i in range(6)])
    assert all(a < b for a, b in itertools.pairwise(fractions))

    only = FaithfulnessMetrics(adapter, metrics=["insertion"], steps=10, batch_size=4)
    both = evaluator.evaluate(raw_image((8, 8)), np.ones((8, 8)), 1)
    assert only.evaluate(raw_image((8, 8)), np.ones((8, 8)), 1) == {
        "insertion_auc": pytest.approx(both["insertion_auc"], abs=1e-6)
    }


def test_rejects_bad_arguments(keras_mod):
    adapter = ModelAdapter(build_conv_model(keras_mod, (8, 8), seed=4), preprocess="raw")
    with pytest.raises(ValueError, match="unknown metric"):
        FaithfulnessMetrics(adapter, metrics=("deletion", "pointing"))
    with pytest.raises(ValueError, match="steps"):
        FaithfulnessMetrics(adapter, steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        FaithfulnessMetrics(adapter, batch_size=0)
    evaluator = FaithfulnessMetrics(adapter, steps=4)
    image = raw_image((8, 8))
    with pytest.raises(ValueError, match="resolution"):
        evaluator.evaluate(image, np.ones((4, 4)), 0)
    with pytest.raises(ValueError, match="expects"):
        evaluator.evaluate(raw_image((9, 8)), np.ones((9, 8)), 0)
    with pytest.raises(ValueError, match="out of range"):
        evaluator.evaluate(image, np.ones((8, 8)), 3)
    with pytest.raises(ValueError, match="NaN"):
        evaluator.evaluate(image, np.full((8, 8), np.nan), 0)

"""Saliency, SmoothGrad and Integrated Gradients against plain GradientTape references."""

from __future__ import annotations

import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.methods.integrated_gradients import (
    IntegratedGradients,
    baseline_image,
    trapezoid_weights,
)
from cnnvis_cli.methods.saliency import Saliency
from cnnvis_cli.methods.smoothgrad import SmoothGrad

SIZE = (12, 14)


def _normalise(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(-2, -1), keepdims=True)
    high = maps.max(axis=(-2, -1), keepdims=True)
    return (maps - low) / (high - low + 1e-8)


def logit_gradients(model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """d logit[b, classes[b]] / d images[b] with a plain tape, (B, h, w, c) float64."""
    import tensorflow as tf

    x = tf.constant(np.asarray(images, np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = tf.reduce_sum(tf.gather(model(x), classes, batch_dims=1))
    return tape.gradient(score, x).numpy().astype(np.float64)


@pytest.fixture(scope="module")
def smooth_model(keras_mod):
    """Rescaling -> conv (tanh) -> GAP -> dense, linear head: smooth, so IG converges."""
    keras_mod.utils.set_random_seed(7)
    return keras_mod.Sequential(
        [
            keras_mod.Input((*SIZE, 3)),
            keras_mod.layers.Rescaling(1 / 255),
            keras_mod.layers.Conv2D(8, 3, padding="same", activation="tanh", name="conv"),
            keras_mod.layers.Conv2D(8, 3, padding="same", activation="softplus", name="conv2"),
            keras_mod.layers.GlobalAveragePooling2D(),
            keras_mod.layers.Dense(3, name="head"),
        ]
    )


@pytest.fixture(scope="module")
def adapter(smooth_model):
    adapter = ModelAdapter(smooth_model)
    assert adapter.preprocess_mode == "raw"
    return adapter


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(4).uniform(0, 255, (3, *SIZE, 3)).astype(np.float32)


# -- saliency -----------------------------------------------------------------------------------


def test_saliency_is_max_abs_input_gradient(smooth_model, adapter, images):
    explanations = Saliency.create(adapter, top_k=2, batch_size=3).explain(images)
    order = np.argsort(-smooth_model(images).numpy(), axis=1)[:, :2]
    for k in range(2):
        expected = _normalise(np.abs(logit_gradients(smooth_model, images, order[:, k])).max(-1))
        assert [e.targets[k] for e in explanations] == list(order[:, k])
        got = np.stack([e.maps[k] for e in explanations])
        assert got.shape == (3, *SIZE)
        np.testing.assert_allclose(got, expected, atol=1e-5)


# -- SmoothGrad ---------------------------------------------------------------------------------


def smoothgrad_reference(model, images, classes, samples, noise, seed):
    """One noisy copy at a time, the noise regenerated with the documented stateless seeds."""
    import tensorflow as tf

    means = []
    for image, cls in zip(images, classes, strict=True):
        total = np.zeros(image.shape, np.float64)
        for s in range(samples):
            eps = tf.random.stateless_normal(image.shape, seed=[seed, s], alg="philox")
            noisy = (tf.constant(image) + eps * (255.0 * noise)).numpy()
            total += logit_gradients(model, noisy[None], np.array([cls]))[0]
        means.append(total / samples)
    return np.stack(means)


def test_smoothgrad_equals_mean_of_per_sample_gradients(smooth_model, adapter, images):
    method = SmoothGrad.create(adapter, samples=5, noise=0.1, seed=3, eval_batch=4)
    fractions: list[float] = []
    mean, chosen = method.mean_gradients(images[:2], fractions.append)
    targets = chosen["targets"]
    classes = smooth_model(images[:2]).numpy().argmax(axis=1)
    np.testing.assert_array_equal(targets[:, 0], classes)
    expected = smoothgrad_reference(smooth_model, images[:2], classes, 5, 0.1, 3)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(mean[:, 0] / scale, expected / scale, atol=1e-5)
    assert fractions == pytest.approx([1 / 3, 2 / 3, 1.0])  # 10 copies in chunks of 4

    maps = np.stack([e.maps[0] for e in method.explain(images[:2])])
    np.testing.assert_allclose(maps, _normalise(np.abs(expected).max(-1)), atol=1e-5)
    # batching does not matter: the same image alone gives the same map
    alone = SmoothGrad.create(adapter, samples=5, noise=0.1, seed=3, eval_batch=3).explain(
        images[1:2]
    )
    np.testing.assert_allclose(alone[0].maps[0], maps[1], atol=1e-5)
    other = SmoothGrad.create(adapter, samples=5, noise=0.1, seed=4, eval_batch=4).explain(
        images[1:2]
    )
    assert np.abs(other[0].maps[0] - maps[1]).max() > 1e-3


def test_smoothgrad_without_noise_equals_saliency(adapter, images):
    smooth = SmoothGrad.create(adapter, samples=1, noise=0.0, top_k=2, eval_batch=4).explain(images)
    plain = Saliency.create(adapter, top_k=2, batch_size=3).explain(images)
    for a, b in zip(smooth, plain, strict=True):
        assert a.targets == b.targets
        np.testing.assert_allclose(a.outputs, b.outputs, rtol=1e-6)
        for k in range(2):
            np.testing.assert_allclose(a.maps[k], b.maps[k], atol=1e-5)


# -- Integrated Gradients -----------------------------------------------------------------------


def ig_reference(model, image, baseline, cls, steps):
    """The trapezoid sum, one path point at a time."""
    total = np.zeros(image.shape, np.float64)
    for k, weight in enumerate(trapezoid_weights(steps)):
        alpha = k / steps
        point = ((1 - alpha) * baseline + alpha * image).astype(np.float32)
        total += weight * logit_gradients(model, point[None], np.array([cls]))[0]
    return (image.astype(np.float64) - baseline) * total


def test_trapezoid_weights():
    np.testing.assert_allclose(trapezoid_weights(4), [0.125, 0.25, 0.25, 0.25, 0.125])
    assert trapezoid_weights(1).tolist() == [0.5, 0.5]


def test_ig_equals_trapezoid_loop_reference(smooth_model, adapter, images):
    method = IntegratedGradients.create(adapter, steps=4, baseline="gray", top_k=2, eval_batch=4)
    fractions: list[float] = []
    result = method.attribute(images[:2], fractions.append)  # 10 path points, chunks of 4
    assert fractions == pytest.approx([1 / 3, 2 / 3, 1.0])
    order = np.argsort(-smooth_model(images[:2]).numpy(), axis=1)[:, :2]
    np.testing.assert_array_equal(result.targets, order)
    for b in range(2):
        for k in range(2):
            expected = ig_reference(smooth_model, images[b], 127.5, order[b, k], 4)
            scale = np.abs(expected).max()
            np.testing.assert_allclose(
                result.attributions[b, k] / scale, expected / scale, atol=1e-5
            )
    explanations = method.explain(images[:2])
    for b, explanation in enumerate(explanations):
        expected = _normalise(np.abs(result.attributions[b]).sum(-1))
        np.testing.assert_allclose(np.stack(explanation.maps), expected, atol=1e-5)
        assert len(explanation.facts.completeness_gap) == 2


@pytest.mark.parametrize("baseline", ["black", "blur"])
def test_ig_completeness_at_200_steps(smooth_model, adapter, images, baseline):
    if baseline == "blur":  # blurring white noise barely moves a GAP model: use structure
        checks = (np.indices(SIZE).sum(axis=0) // 2 % 2)[..., None] * np.array([220, 40, 160])
        images = np.stack([checks, 255 - checks, np.roll(checks, 1, axis=0)]).astype(np.float32)
    method = IntegratedGradients.create(adapter, steps=200, baseline=baseline, eval_batch=64)
    result = method.attribute(images)
    logits = smooth_model(images).numpy()
    base_logits = smooth_model(result.baselines).numpy()
    classes = result.targets[:, 0]
    delta = logits[np.arange(3), classes] - base_logits[np.arange(3), classes]
    np.testing.assert_allclose(result.input_scores[:, 0], logits.max(axis=1), rtol=1e-5)
    sums = result.attributions[:, 0].sum(axis=(1, 2, 3))
    assert np.all(np.abs(delta) > 1e-4)  # well above float32 error of the logits
    np.testing.assert_allclose(sums, delta, rtol=0.01)
    gaps = [e.facts.completeness_gap[0] for e in method.explain(images)]
    assert all(isinstance(gap, float) and gap < 0.01 for gap in gaps)


def gaussian_blur_reference(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian, radius as OpenCV picks for float images, reflect-101 borders."""
    radius = (round(sigma * 8 + 1) | 1) // 2
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(
        image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), "reflect"
    )
    rows = sum(w * padded[i : i + image.shape[0]] for i, w in enumerate(kernel))
    return sum(w * rows[:, i : i + image.shape[1]] for i, w in enumerate(kernel))


def test_ig_baselines(adapter, images):
    image = np.random.default_rng(0).uniform(0, 255, (40, 60, 3)).astype(np.float32)
    assert np.all(baseline_image(image, "black") == 0)
    assert np.all(baseline_image(image, "gray") == 127.5)
    np.testing.assert_allclose(baseline_image(image, "mean")[5, 7], image.mean(axis=(0, 1)))
    blurred = baseline_image(image, "blur")  # sigma = 40 / 20 = 2
    np.testing.assert_allclose(blurred, gaussian_blur_reference(image, 2.0), atol=1e-3)
    assert blurred.std() < image.std() / 3
    gray = np.full((40, 60, 1), 90, np.float32)
    np.testing.assert_allclose(baseline_image(gray, "blur"), gray, atol=1e-4)
    assert baseline_image(gray, "blur").shape == (40, 60, 1)
    for name in ("black", "gray", "blur"):
        method = IntegratedGradients.create(adapter, steps=2, baseline=name, eval_batch=8)
        result = method.attribute(images[:2])
        expected = np.stack([baseline_image(i, name) for i in images[:2]])
        np.testing.assert_array_equal(result.baselines, expected)
        # the path starts at the baseline: F(x') is the model's logit there
        base = adapter.model(expected).numpy()
        np.testing.assert_allclose(
            result.baseline_scores[:, 0], base[np.arange(2), result.targets[:, 0]], rtol=1e-5
        )
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients.create(adapter, baseline="purple")
    with pytest.raises(ValueError, match="steps"):
        IntegratedGradients.create(adapter, steps=0)


# -- tracing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda a: Saliency.create(a, batch_size=3),
        lambda a: SmoothGrad.create(a, samples=3, eval_batch=4),
        lambda a: IntegratedGradients.create(a, steps=3, eval_batch=4),
    ],
    ids=["saliency", "smoothgrad", "integrated-gradients"],
)
def test_traced_once_across_batches(adapter, images, make):
    method = make(adapter)
    assert len(method.explain(images[:1])) == 1
    assert len(method.explain(images)) == 3
    assert len(method.explain(images[1:])) == 2
    assert set(method.trace_counts().values()) == {1}  # each function ran, traced once
    assert method.kind == "heatmap"

"""Grad-CAM++, HiResCAM and LayerCAM against NumPy references of the papers' formulas."""

from __future__ import annotations

import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.methods.gradcam import GradCAM
from cnnvis_cli.methods.gradcam_pp import GradCAMPlusPlus
from cnnvis_cli.methods.hirescam import HiResCAM
from cnnvis_cli.methods.layercam import LayerCAM
from tests.conftest import build_cam_model


def _normalise(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(-2, -1), keepdims=True)
    high = maps.max(axis=(-2, -1), keepdims=True)
    return (maps - low) / (high - low + 1e-8)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def gradcam_pp_reference(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Chattopadhay et al. (2018), eq. 19 with ReLU(g) weights: (B, h, w, k) -> (B, h, w)."""
    g2, g3 = g**2, g**3
    denominator = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3
    alpha = np.divide(g2, denominator, out=np.zeros_like(g), where=denominator != 0)
    weights = (alpha * _relu(g)).sum(axis=(1, 2))
    return _relu(np.einsum("bhwk,bk->bhw", a, weights))


def hirescam_reference(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return _relu((g * a).sum(axis=-1))


def layercam_reference(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return _relu((_relu(g) * a).sum(axis=-1))


METHODS = {
    "gradcam-pp": (GradCAMPlusPlus, gradcam_pp_reference),
    "hirescam": (HiResCAM, hirescam_reference),
    "layercam": (LayerCAM, layercam_reference),
}


def features_and_gradients(keras, model, layer: str, images: np.ndarray, classes: np.ndarray):
    """A and dy^c/dA from a flat model with a linear head, independently of the adapter."""
    import tensorflow as tf

    flat = keras.Model(model.inputs[0], [model.get_layer(layer).output, model.output])
    with tf.GradientTape() as tape:
        features, logits = flat(tf.constant(images))
        score = tf.reduce_sum(tf.gather(logits, classes, batch_dims=1))
    gradients = tape.gradient(score, features)
    return features.numpy().astype(np.float64), gradients.numpy().astype(np.float64)


@pytest.fixture(scope="module")
def two_conv_model(keras_mod):
    """conv1 (16x20) -> max-pool -> conv2 (8x10) -> flatten -> dense: non-uniform gradients."""
    keras_mod.utils.set_random_seed(5)
    inputs = keras_mod.Input((16, 20, 3))
    x = keras_mod.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras_mod.layers.MaxPooling2D(2)(x)
    x = keras_mod.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras_mod.layers.Flatten()(x)
    outputs = keras_mod.layers.Dense(3, name="head")(x)
    return keras_mod.Model(inputs, outputs)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(11).uniform(0, 1, (4, 16, 20, 3)).astype(np.float32)


@pytest.mark.parametrize("layer", ["conv2", "conv1"])
@pytest.mark.parametrize("name", list(METHODS))
def test_matches_formula_for_top_two_classes(keras_mod, two_conv_model, images, name, layer):
    cls, reference = METHODS[name]
    adapter = ModelAdapter(two_conv_model, preprocess="raw")
    explanations = cls.create(adapter, layer=layer, top_k=2, batch_size=4).explain(images)
    order = np.argsort(-two_conv_model(images).numpy(), axis=1)[:, :2]
    for k in range(2):
        a, g = features_and_gradients(keras_mod, two_conv_model, layer, images, order[:, k])
        expected = _normalise(reference(a, g))
        got = np.stack([e.maps[k] for e in explanations])
        assert [e.targets[k] for e in explanations] == list(order[:, k])
        assert got.shape == expected.shape == (4, *a.shape[1:3])
        assert got.max() > 0.99  # a real, non-trivial map
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_hirescam_equals_gradcam_with_uniform_gradients(cam_model, two_conv_model, images):
    """conv -> GAP -> dense: dy/dA = W / (h w) everywhere, so HiResCAM = Grad-CAM (= CAM)."""
    adapter = ModelAdapter(cam_model, preprocess="raw")
    hires = HiResCAM.create(adapter, top_k=2, batch_size=4).explain(images)
    grad = GradCAM.create(adapter, top_k=2, batch_size=4).explain(images)
    for a, b in zip(hires, grad, strict=True):
        assert a.targets == b.targets
        for k in range(2):
            np.testing.assert_allclose(a.maps[k], b.maps[k], atol=1e-5)
    # with a flatten -> dense head the gradients vary over positions, and the maps differ
    adapter = ModelAdapter(two_conv_model, preprocess="raw")
    hires = HiResCAM.create(adapter, batch_size=4).explain(images)
    grad = GradCAM.create(adapter, batch_size=4).explain(images)
    assert max(np.abs(a.maps[0] - b.maps[0]).max() for a, b in zip(hires, grad, strict=True)) > 0.1


def test_layercam_on_an_earlier_layer_keeps_its_resolution(two_conv_model, images):
    adapter = ModelAdapter(two_conv_model, preprocess="raw")
    early = LayerCAM.create(adapter, layer="conv1", batch_size=4)
    late = LayerCAM.create(adapter, batch_size=4)
    assert (early.layer.path, late.layer.path) == ("conv1", "conv2")
    assert early.params()["layer"] == "conv1"
    assert early.explain(images)[0].maps[0].shape == (16, 20)
    assert late.explain(images)[0].maps[0].shape == (8, 10)


@pytest.mark.parametrize("name", list(METHODS))
def test_zero_gradients_and_features_give_zero_maps_without_nan(keras_mod, name):
    model = build_cam_model(keras_mod)
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([np.zeros_like(kernel), bias])  # dy/dA = 0
    images = np.ones((2, 16, 20, 3), np.float32)
    explanations = (
        METHODS[name][0].create(ModelAdapter(model, preprocess="raw"), batch_size=2).explain(images)
    )
    for explanation in explanations:
        assert np.isfinite(explanation.maps[0]).all()
        assert np.abs(explanation.maps[0]).max() == 0.0


@pytest.mark.parametrize("name", list(METHODS))
def test_short_batch_is_padded_and_traced_once(two_conv_model, images, name):
    cls = METHODS[name][0]
    method = cls.create(ModelAdapter(two_conv_model, preprocess="raw"), batch_size=3)
    first = method.explain(images[:3])
    last = method.explain(images[3:])
    assert len(first) == 3 and len(last) == 1
    assert set(method.trace_counts().values()) == {1}  # each function ran, traced once
    alone = cls.create(ModelAdapter(two_conv_model, preprocess="raw"), batch_size=1).explain(
        images[3:]
    )
    np.testing.assert_allclose(last[0].maps[0], alone[0].maps[0], atol=1e-6)
    assert (method.name, cls.kind) == (name, "heatmap")

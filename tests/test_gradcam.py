"""Grad-CAM against independent NumPy references."""

from __future__ import annotations

import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.methods.gradcam import GradCAM
from tests.conftest import build_cam_model


def _normalise(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(-2, -1), keepdims=True)
    high = maps.max(axis=(-2, -1), keepdims=True)
    return (maps - low) / (high - low + 1e-8)


def cam_reference(keras, model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """CAM identity: for conv -> GAP -> dense, Grad-CAM = ReLU(sum_k W[k, c] A_k) / (h w)."""
    features = keras.Model(model.inputs[0], model.get_layer("conv").output)(images).numpy()
    kernel = model.get_layer("head").get_weights()[0]  # (k, classes)
    h, w = features.shape[1:3]
    weights = kernel[:, classes].T / (h * w)  # (B, k)
    cams = np.maximum(np.einsum("bhwk,bk->bhw", features, weights), 0)
    return _normalise(cams)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).uniform(0, 1, (4, 16, 20, 3)).astype(np.float32)


def test_gradcam_equals_cam_identity(keras_mod, cam_model, images):
    adapter = ModelAdapter(cam_model, preprocess="raw")
    method = GradCAM.create(adapter, batch_size=4)
    explanations = method.explain(images)
    classes = np.array([e.targets[0] for e in explanations])
    logits = cam_model(images).numpy()
    np.testing.assert_array_equal(classes, logits.argmax(axis=1))
    expected = cam_reference(keras_mod, cam_model, images, classes)
    got = np.stack([e.maps[0] for e in explanations])
    assert got.shape == (4, 16, 20)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.min() >= 0 and got.max() <= 1


def test_fixed_class_and_top_k(keras_mod, cam_model, images):
    adapter = ModelAdapter(cam_model, preprocess="raw")
    fixed = GradCAM.create(adapter, class_index=2, batch_size=4).explain(images)
    assert all(e.targets == [2] for e in fixed)
    expected = cam_reference(keras_mod, cam_model, images, np.full(4, 2))
    np.testing.assert_allclose(np.stack([e.maps[0] for e in fixed]), expected, atol=1e-5)

    top = GradCAM.create(adapter, top_k=2, batch_size=4).explain(images)
    order = np.argsort(-cam_model(images).numpy(), axis=1)[:, :2]
    for b, explanation in enumerate(top):
        assert explanation.targets == list(order[b])
        for k in range(2):
            ref = cam_reference(keras_mod, cam_model, images[b : b + 1], order[b, k : k + 1])
            np.testing.assert_allclose(explanation.maps[k], ref[0], atol=1e-5)


@pytest.mark.parametrize("head", ["dense-softmax", "activation-layer", "softmax-layer"])
def test_softmax_head_scores_the_logit(keras_mod, cam_model, images, head):
    """A softmax-headed model gives the same map as the same model without softmax."""
    inputs = keras_mod.Input((16, 20, 3))
    x = cam_model.get_layer("conv")(inputs)
    x = keras_mod.layers.GlobalAveragePooling2D()(x)
    if head == "dense-softmax":
        dense = keras_mod.layers.Dense(3, activation="softmax")
        outputs = dense(x)
    else:
        dense = keras_mod.layers.Dense(3)
        layer = (
            keras_mod.layers.Activation("softmax")
            if head == "activation-layer"
            else keras_mod.layers.Softmax()
        )
        outputs = layer(dense(x))
    dense.set_weights(cam_model.get_layer("head").get_weights())
    softmax_model = keras_mod.Model(inputs, outputs)

    linear = GradCAM.create(ModelAdapter(cam_model, preprocess="raw"), batch_size=4).explain(images)
    adapter = ModelAdapter(softmax_model, preprocess="raw")
    assert adapter.head == "softmax"
    soft = GradCAM.create(adapter, batch_size=4).explain(images)
    for a, b in zip(linear, soft, strict=True):
        assert a.targets == b.targets
        np.testing.assert_allclose(a.maps[0], b.maps[0], atol=1e-5)
        # the reported score is the probability, not the logit
        assert 0 < b.outputs[0] < 1
    probs = softmax_model(images).numpy()
    np.testing.assert_allclose([e.outputs[0] for e in soft], probs.max(axis=1), rtol=1e-5)


def test_zero_map_stays_zero_without_nan(keras_mod):
    model = build_cam_model(keras_mod)
    conv = model.get_layer("conv")
    kernel, bias = conv.get_weights()
    conv.set_weights([np.zeros_like(kernel), np.full_like(bias, -1.0)])  # ReLU -> all zeros
    images = np.ones((2, 16, 20, 3), np.float32)
    explanations = GradCAM.create(ModelAdapter(model, preprocess="raw"), batch_size=2).explain(
        images
    )
    for explanation in explanations:
        assert np.isfinite(explanation.maps[0]).all()
        assert np.abs(explanation.maps[0]).max() == 0.0


def test_short_batch_is_padded_and_traced_once(cam_model, images):
    method = GradCAM.create(ModelAdapter(cam_model, preprocess="raw"), batch_size=3)
    first = method.explain(images[:3])
    last = method.explain(images[3:])  # one image, padded to 3
    assert len(first) == 3 and len(last) == 1
    assert set(method.trace_counts().values()) == {1}  # each function ran, traced once
    single = GradCAM.create(ModelAdapter(cam_model, preprocess="raw"), batch_size=1).explain(
        images[3:]
    )
    np.testing.assert_allclose(last[0].maps[0], single[0].maps[0], atol=1e-6)


def test_nested_model_gradients_flow_from_outer_output(keras_mod, cam_model, images):
    """A base model inside a wrapper: the automatic layer is found inside the base."""
    base = keras_mod.Sequential(
        [keras_mod.Input((16, 20, 3)), keras_mod.layers.Conv2D(6, 3, padding="same", name="conv")],
        name="base",
    )
    base.get_layer("conv").set_weights(cam_model.get_layer("conv").get_weights())
    inputs = keras_mod.Input((16, 20, 3))
    x = keras_mod.layers.ReLU()(base(inputs))
    x = keras_mod.layers.GlobalAveragePooling2D()(x)
    head = keras_mod.layers.Dense(3, activation="softmax")
    outputs = head(x)
    head.set_weights(cam_model.get_layer("head").get_weights())
    wrapper = keras_mod.Model(inputs, outputs)
    adapter = ModelAdapter(wrapper, preprocess="raw")
    method = GradCAM.create(adapter, batch_size=4)
    assert method.layer.path.endswith("re_lu") or method.layer.class_name == "ReLU"
    nested = GradCAM.create(adapter, layer="base/conv", batch_size=4)
    assert nested.layer.path == "base/conv"
    got = method.explain(images)
    expected = GradCAM.create(ModelAdapter(cam_model, preprocess="raw"), batch_size=4).explain(
        images
    )
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a.maps[0], b.maps[0], atol=1e-5)


def test_layer_errors_name_the_closest_layer(cam_model):
    from cnnvis_cli.errors import ModelError

    adapter = ModelAdapter(cam_model, preprocess="raw")
    with pytest.raises(ModelError, match="closest: conv"):
        adapter.resolve_layer("cnov")
    with pytest.raises(ModelError, match="4-D"):
        adapter.resolve_layer("head")
    with pytest.raises(ModelError, match="out of range"):
        adapter.class_index("7")

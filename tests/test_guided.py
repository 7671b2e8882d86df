"""Guided back-propagation and guided Grad-CAM against hand-written NumPy references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter, iter_layers
from cnnvis_cli.methods.gradcam import GradCAM
from cnnvis_cli.methods.guided import GuidedBackprop, GuidedGradCAM

# -- NumPy reference: forward from the weights, backward by hand with explicit masks ----------


def _conv_forward(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'valid', stride-1 convolution (B, H, W, C) * (kh, kw, C, O)."""
    kh, kw = kernel.shape[:2]
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("bhwc,co->bhwo", x[:, i : i + h, j : j + w], kernel[i, j])
    return out + bias


def _conv_backward(grad: np.ndarray, kernel: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    kh, kw = kernel.shape[:2]
    h, w = grad.shape[1:3]
    dx = np.zeros(shape)
    for i in range(kh):
        for j in range(kw):
            dx[:, i : i + h, j : j + w] += np.einsum("bhwo,co->bhwc", grad, kernel[i, j])
    return dx


def reference(
    ops: list[tuple],
    images: np.ndarray,
    classes: np.ndarray,
    *,
    guided: bool = True,
    deconvnet: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """d logit[b, classes[b]] / d images, logits and every ReLU's pre-activation.

    ``ops``: ("conv", W, b), ("dense", W, b), ("relu", threshold, max_value), ("flatten",),
    ("gap",). At a ReLU the gradient is kept where threshold < x < max_value and, when
    ``guided``, also where the upstream gradient is positive; ``deconvnet``: only where the
    upstream gradient is positive, whatever the forward input.
    """
    x = images.astype(np.float64)
    inputs, pre_activations = [], []
    for op in ops:
        inputs.append(x)
        kind = op[0]
        if kind == "conv":
            x = _conv_forward(x, op[1], op[2])
        elif kind == "dense":
            x = x @ op[1] + op[2]
        elif kind == "relu":
            pre_activations.append(x)
            x = np.where(x > op[1], x, 0.0)
            if op[2] is not None:
                x = np.minimum(x, op[2])
        elif kind == "flatten":
            x = x.reshape(len(x), -1)
        elif kind == "gap":
            x = x.mean(axis=(1, 2))
    logits = x
    grad = np.zeros_like(logits)
    grad[np.arange(len(grad)), classes] = 1.0
    for op, x_in in zip(reversed(ops), reversed(inputs), strict=True):
        kind = op[0]
        if kind == "conv":
            grad = _conv_backward(grad, op[1], x_in.shape)
        elif kind == "dense":
            grad = grad @ op[1].T
        elif kind == "relu" and deconvnet:
            grad = grad * (grad > 0)
        elif kind == "relu":
            mask = x_in > op[1]
            if op[2] is not None:
                mask &= x_in < op[2]
            if guided:
                mask &= grad > 0
            grad = grad * mask
        elif kind == "flatten":
            grad = grad.reshape(x_in.shape)
        elif kind == "gap":
            h, w = x_in.shape[1:3]
            grad = np.broadcast_to(grad[:, None, None, :] / (h * w), x_in.shape).copy()
    return grad, logits, pre_activations


def weights(model, name: str) -> tuple[np.ndarray, np.ndarray]:
    layer = next(info.layer for info in iter_layers(model) if info.layer.name == name)
    kernel, bias = layer.get_weights()
    return kernel.astype(np.float64), bias.astype(np.float64)


def randomise(model, seed: int, scales: dict[str, float] | None = None) -> None:
    """Random normal kernels (std ~ 1/sqrt(fan-in), times ``scales[name]``) and biases."""
    rng = np.random.default_rng(seed)
    for info in iter_layers(model):
        values = info.layer.get_weights()
        if len(values) != 2:
            continue
        kernel, bias = values
        scale = (scales or {}).get(info.layer.name, 1.0) / np.sqrt(np.prod(kernel.shape[:-1]))
        info.layer.set_weights(
            [
                rng.normal(0, scale, kernel.shape).astype(np.float32),
                rng.normal(0, 0.3, bias.shape).astype(np.float32),
            ]
        )


def assert_close(got: np.ndarray, expected: np.ndarray, rtol: float = 1e-5) -> None:
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def plain_gradient(model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Ordinary d output[b, classes[b]] / d images (linear-head models)."""
    from cnnvis_cli.core.tf import tf_and_keras

    tf, _ = tf_and_keras()
    x = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = tf.gather(model(x, training=False), classes[:, None], batch_dims=1)
    return tape.gradient(scores, x).numpy()


def guided_maps(explanations, k: int = 0) -> np.ndarray:
    return np.stack([e.maps[k] for e in explanations])


# -- models -----------------------------------------------------------------------------------


def build_conv_net(keras):
    """conv(relu) -> flatten -> dense(relu) -> dense(softmax)."""
    inputs = keras.Input((6, 7, 3))
    x = keras.layers.Conv2D(5, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    randomise(model, seed=10)
    return model


def conv_net_ops(model) -> list[tuple]:
    return [
        ("conv", *weights(model, "conv")),
        ("relu", 0.0, None),
        ("flatten",),
        ("dense", *weights(model, "fc")),
        ("relu", 0.0, None),
        ("dense", *weights(model, "head")),
    ]


def build_relu6_net(keras):
    """dense -> ReLU(6) -> dense(relu6) -> dense -> ReLU(threshold=0.5) -> dense."""
    inputs = keras.Input((3, 3, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, name="d1")(x)
    x = keras.layers.ReLU(max_value=6.0, name="relu6_layer")(x)
    x = keras.layers.Dense(12, activation="relu6", name="d2")(x)
    x = keras.layers.Dense(10, name="d3")(x)
    x = keras.layers.ReLU(threshold=0.5, name="thresholded")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    randomise(model, seed=11, scales={"d1": 6.0, "d2": 2.5, "d3": 1.5})
    return model


def relu6_net_ops(model, *, clip: bool = True) -> list[tuple]:
    six = 6.0 if clip else None
    return [
        ("flatten",),
        ("dense", *weights(model, "d1")),
        ("relu", 0.0, six),
        ("dense", *weights(model, "d2")),
        ("relu", 0.0, six),
        ("dense", *weights(model, "d3")),
        ("relu", 0.5, None),
        ("dense", *weights(model, "head")),
    ]


def build_nested_net(keras):
    """A Sequential base (conv -> Activation("relu") -> conv(relu)) inside a functional model."""
    base = keras.Sequential(
        [
            keras.Input((7, 7, 1)),
            keras.layers.Conv2D(4, 3, name="c1"),
            keras.layers.Activation("relu", name="act"),
            keras.layers.Conv2D(3, 2, activation="relu", name="c2"),
        ],
        name="base",
    )
    inputs = keras.Input((7, 7, 1))
    x = base(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs)
    randomise(model, seed=12)
    return model


def nested_net_ops(model) -> list[tuple]:
    return [
        ("conv", *weights(model, "c1")),
        ("relu", 0.0, None),
        ("conv", *weights(model, "c2")),
        ("relu", 0.0, None),
        ("gap",),
        ("dense", *weights(model, "head")),
    ]


@pytest.fixture(scope="module")
def conv_net(keras_mod):
    return build_conv_net(keras_mod)


@pytest.fixture(scope="module")
def relu6_net(keras_mod):
    return build_relu6_net(keras_mod)


@pytest.fixture(scope="module")
def nested_net(keras_mod):
    return build_nested_net(keras_mod)


def uniform(shape: tuple[int, ...], seed: int, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, high, shape).astype(np.float32)


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("preprocess", ["raw", "unit"])
def test_guided_gradient_matches_numpy_reference(conv_net, preprocess):
    """Top-2 guided gradients of the logits, through a softmax head and the preprocessing."""
    images = uniform((4, 6, 7, 3), seed=1)
    raw = images * 255 if preprocess == "unit" else images
    method = GuidedBackprop.create(
        ModelAdapter(conv_net, preprocess=preprocess), top_k=2, batch_size=4
    )
    explanations = method.explain(raw)
    ops = conv_net_ops(conv_net)
    probabilities = conv_net(images).numpy()
    order = np.argsort(-probabilities, axis=1)[:, :2]
    chain = 1 / 255 if preprocess == "unit" else 1.0  # d(raw / 255) / d raw
    for k in range(2):
        classes = np.array([e.targets[k] for e in explanations])
        np.testing.assert_array_equal(classes, order[:, k])
        expected, _, _ = reference(ops, images, classes)
        got = guided_maps(explanations, k)
        assert got.shape == (4, 6, 7, 3) and got.dtype == np.float32
        assert_close(got, expected * chain)
        # forward values are the original model's
        scores = np.array([e.outputs[k] for e in explanations])
        np.testing.assert_allclose(scores, probabilities[np.arange(4), classes], rtol=1e-6)
    plain, _, _ = reference(ops, images, order[:, 0], guided=False)
    assert not np.allclose(guided_maps(explanations) / chain, plain, atol=1e-4)
    assert method.unguided_layers == []
    assert method.params() == {"class_index": None, "top_k": 2, "unguided_layers": []}


def test_relu6_and_threshold_are_gated(relu6_net):
    """No gradient where ReLU6's input is >= 6, or where a thresholded ReLU's is <= threshold."""
    images = uniform((4, 3, 3, 1), seed=2, high=4.0)
    method = GuidedBackprop.create(
        ModelAdapter(relu6_net, preprocess="raw"), class_index=0, batch_size=4
    )
    got = guided_maps(method.explain(images))
    classes = np.full(4, 0)
    expected, logits, pre = reference(relu6_net_ops(relu6_net), images, classes)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(logits, relu6_net(images).numpy(), rtol=1e-5, atol=1e-5)
    for values in pre[:2]:  # both ReLU6 layers have saturated and linear units
        assert (values > 6).any() and ((values > 0) & (values < 6)).any()
    assert ((pre[2] > 0) & (pre[2] <= 0.5)).any()
    assert_close(got, expected)
    ungated = relu6_net_ops(relu6_net)
    ungated[6] = ("relu", 0.0, None)  # the threshold matters for this class
    assert not np.allclose(got, reference(ungated, images, classes)[0], atol=1e-3 * scale)
    unclipped, _, _ = reference(relu6_net_ops(relu6_net, clip=False), images, classes)
    assert not np.allclose(got, unclipped, atol=1e-3 * scale)
    # the plain (unguided) reference agrees with TensorFlow's own gradient
    plain, _, _ = reference(relu6_net_ops(relu6_net), images, classes, guided=False)
    assert_close(plain_gradient(relu6_net, images, classes), plain)


def test_nested_model_is_guided(nested_net):
    images = uniform((4, 7, 7, 1), seed=3)
    method = GuidedBackprop.create(ModelAdapter(nested_net, preprocess="raw"), batch_size=4)
    explanations = method.explain(images)
    classes = np.array([e.targets[0] for e in explanations])
    np.testing.assert_array_equal(classes, nested_net(images).numpy().argmax(axis=1))
    ops = nested_net_ops(nested_net)
    expected, _, _ = reference(ops, images, classes)
    got = guided_maps(explanations)
    assert_close(got, expected)
    plain = plain_gradient(nested_net, images, classes)
    assert_close(plain, reference(ops, images, classes, guided=False)[0])
    assert not np.allclose(got, plain, atol=1e-3 * np.abs(plain).max())


@pytest.mark.parametrize("builder", [build_nested_net, build_relu6_net])
def test_user_model_is_left_untouched(keras_mod, builder):
    model = builder(keras_mod)
    shape = (4, *model.inputs[0].shape[1:])
    images = uniform(shape, seed=4)
    classes = np.array([0, 1, 2, 0])

    def snapshot():
        layers = [model, *(info.layer for info in iter_layers(model))]
        layers += [layer for layer in model.layers if hasattr(layer, "layers")]
        return {
            "weights": [w.copy() for w in model.get_weights()],
            "activations": {id(layer): getattr(layer, "activation", None) for layer in layers},
            "calls": [layer for layer in layers if "call" in layer.__dict__],
            "outputs": model(images).numpy(),
            "gradient": plain_gradient(model, images, classes),
        }

    before = snapshot()
    adapter = ModelAdapter(model, preprocess="raw")
    guided = guided_maps(GuidedBackprop.create(adapter, batch_size=4).explain(images))
    if builder is build_nested_net:
        GuidedGradCAM.create(adapter, batch_size=4).explain(images)
    after = snapshot()

    for w_before, w_after in zip(before["weights"], after["weights"], strict=True):
        np.testing.assert_array_equal(w_before, w_after)
    assert before["activations"].keys() == after["activations"].keys()
    for key, activation in before["activations"].items():
        assert after["activations"][key] is activation
    assert before["calls"] == after["calls"] == []
    np.testing.assert_array_equal(before["outputs"], after["outputs"])
    np.testing.assert_array_equal(before["gradient"], after["gradient"])
    assert not np.allclose(guided, after["gradient"], atol=1e-3 * np.abs(guided).max())


def test_other_nonlinearities_are_reported_not_guided(keras_mod):
    inputs = keras_mod.Input((6, 6, 3))
    x = keras_mod.layers.Conv2D(4, 3, activation="swish", name="swish_conv")(inputs)
    x = keras_mod.layers.Conv2D(4, 1, activation="relu", name="relu_conv")(x)
    x = keras_mod.layers.LeakyReLU(name="leaky")(x)
    x = keras_mod.layers.ReLU(negative_slope=0.1, name="leaky_relu_layer")(x)
    x = keras_mod.layers.PReLU(name="prelu")(x)
    x = keras_mod.layers.GlobalAveragePooling2D()(x)
    x = keras_mod.layers.Dense(5, activation="gelu", name="gelu_fc")(x)
    outputs = keras_mod.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras_mod.Model(inputs, outputs)
    expected = ["swish_conv", "leaky", "leaky_relu_layer", "prelu", "gelu_fc"]

    images = uniform((2, 6, 6, 3), seed=5, high=255.0)
    method = GuidedBackprop.create(ModelAdapter(model, preprocess="unit"), batch_size=2)
    assert method.unguided_layers == expected
    assert method.params()["unguided_layers"] == expected
    explanations = method.explain(images)
    maps = guided_maps(explanations)
    assert maps.shape == (2, 6, 6, 3) and np.isfinite(maps).all()
    probabilities = model(images / 255).numpy()
    scores = np.array([e.outputs[0] for e in explanations])
    np.testing.assert_allclose(scores, probabilities.max(axis=1), rtol=1e-6)

    both = GuidedGradCAM.create(ModelAdapter(model, preprocess="unit"), batch_size=2)
    assert both.params()["unguided_layers"] == expected


@pytest.mark.parametrize("class_index", [None, 1])
def test_guided_gradcam_is_guided_times_upsampled_gradcam(keras_mod, class_index):
    keras_mod.utils.set_random_seed(6)
    inputs = keras_mod.Input((8, 10, 3))
    x = keras_mod.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras_mod.layers.MaxPooling2D(2)(x)
    x = keras_mod.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras_mod.layers.GlobalAveragePooling2D()(x)
    outputs = keras_mod.layers.Dense(3, activation="softmax", name="head")(x)
    model = keras_mod.Model(inputs, outputs)
    randomise(model, seed=6)
    adapter = ModelAdapter(model, preprocess="raw")
    images = uniform((4, 8, 10, 3), seed=6)
    options = {"class_index": class_index, "top_k": 2, "batch_size": 4}

    method = GuidedGradCAM.create(adapter, layer="conv2", **options)
    assert method.params()["layer"] == "conv2"
    explanations = method.explain(images)

    guided = GuidedBackprop.create(adapter, **options).explain(images)
    cams = GradCAM.create(adapter, layer="conv2", **options).explain(images)
    assert cams[0].maps[0].shape == (4, 5)
    for b, explanation in enumerate(explanations):
        assert explanation.targets == cams[b].targets
        assert explanation.targets == guided[b].targets
        for k in range(len(explanation.targets)):
            # an independent resize (OpenCV's, half-pixel centres) of the 4 x 5 Grad-CAM map
            upsampled = cv2.resize(cams[b].maps[k], (10, 8), interpolation=cv2.INTER_LINEAR)
            expected = guided[b].maps[k] * upsampled[..., None]
            assert explanation.maps[k].shape == (8, 10, 3)
            assert_close(explanation.maps[k], expected)
    if class_index is not None:
        assert all(e.targets == [1] for e in explanations)


def test_compiled_once_per_method(conv_net):
    adapter = ModelAdapter(conv_net, preprocess="raw")
    images = uniform((5, 6, 7, 3), seed=7)
    for method in (
        GuidedBackprop.create(adapter, batch_size=3),
        GuidedGradCAM.create(adapter, batch_size=3),
    ):
        first = method.explain(images[:3])
        second = method.explain(images[3:])  # short batch: padded to batch_size
        assert len(first) == 3 and len(second) == 2
        assert set(method.trace_counts().values()) == {1}  # each function ran, traced once

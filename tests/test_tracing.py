"""What the compiled functions run: no method ever differentiates a convolution's weights.

On some Intel CPUs oneDNN's eager filter gradient of a 1x1 stride-2 convolution corrupts the
heap; every method takes its gradients in traced functions that TensorFlow prunes of the filter
gradients nobody asked for. The audit reads the graphs each method actually traced.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.tracing import WEIGHT_GRADIENT_OPS, executed_op_types, weight_gradient_ops
from cnnvis_cli.methods import get_method
from tests.conftest import invoke, random_rgb, write_image

CAM_LAYER = {"layer": "conv_a"}  # before the strided 1x1 convolution: gradients cross it
GRADIENT_METHODS = {
    "gradcam": CAM_LAYER,
    "gradcam-pp": CAM_LAYER,
    "hirescam": CAM_LAYER,
    "layercam": CAM_LAYER,
    "xgradcam": CAM_LAYER,
    "eigengradcam": CAM_LAYER,
    "gradcam-elementwise": {**CAM_LAYER, "aug_smooth": True, "eigen_smooth": True},
    "guided-gradcam": CAM_LAYER,
    "saliency": {},
    "guided": {},
    "deconvnet": {},
    "gradient-input": {},
    "smoothgrad": {"samples": 2},
    "vargrad": {"samples": 2},
    "squaregrad": {"samples": 2},
    "integrated-gradients": {"steps": 2},
    "gradient-shap": {"samples": 2},
}
CLI_OPTIONS = {
    "smoothgrad": ["--samples", "2"],
    "vargrad": ["--samples", "2"],
    "squaregrad": ["--samples", "2"],
    "integrated-gradients": ["--steps", "2"],
    "gradient-shap": ["--samples", "2"],
}


def build_strided_model(keras):
    """conv 3x3 -> conv 1x1 stride 2 (no bias) on an even 16x16 map -> conv -> GAP -> dense."""
    keras.utils.set_random_seed(21)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(x)
    x = keras.layers.Conv2D(6, 1, strides=2, use_bias=False, activation="relu", name="pointwise")(x)
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def strided(keras_mod):
    return build_strided_model(keras_mod)


def test_the_audit_sees_a_filter_gradient_when_one_is_taken(strided):
    """A control: differentiating the 1x1 convolution's kernel puts Conv2DBackpropFilter in the
    traced graph (traced only, never run), so an empty audit below means something."""
    import tensorflow as tf

    kernel = strided.get_layer("pointwise").kernel

    @tf.function
    def kernel_gradient(x):
        with tf.GradientTape() as tape:
            score = tf.reduce_sum(strided(x))
        return tape.gradient(score, kernel)

    graph = kernel_gradient.get_concrete_function(tf.TensorSpec((1, 16, 16, 3))).graph
    assert "Conv2DBackpropFilter" in executed_op_types(graph) & WEIGHT_GRADIENT_OPS


@pytest.mark.parametrize("name", list(GRADIENT_METHODS))
def test_no_weight_gradient_runs(strided, name):
    adapter = ModelAdapter(strided)
    method = get_method(name).create(adapter, batch_size=2, eval_batch=4, **GRADIENT_METHODS[name])
    images = np.stack([random_rgb(16, 16, seed=s) for s in range(2)]).astype(np.float32)
    explanations = method.explain(images)
    assert len(explanations) == 2 and all(
        np.isfinite(m).all() for e in explanations for m in e.maps
    )
    assert any(function.graphs for function in method.functions)  # something was traced
    ops = {t for f in method.functions for g in f.graphs for t in executed_op_types(g)}
    assert "Conv2DBackpropInput" in ops  # the gradient crossed the strided convolution
    assert weight_gradient_ops(method.functions) == set()


@pytest.fixture(scope="module")
def strided_files(tmp_path_factory, strided):
    folder = tmp_path_factory.mktemp("strided")
    path = folder / "strided.keras"
    strided.save(path)
    images = folder / "images"
    for i in range(3):
        write_image(images / f"im{i}.png", random_rgb(20 + 2 * i, 18, seed=i))
    return path, images


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GRADIENT_METHODS))
def test_cli_runs_on_a_strided_model_for_an_image_and_a_folder(tmp_path, strided_files, name):
    model, folder = strided_files
    extra = CLI_OPTIONS.get(name, [])
    if "layer" in GRADIENT_METHODS[name]:
        extra = [*extra, "--layer", "conv_a"]
    one = invoke(name, folder / "im0.png", "-m", model, "-o", tmp_path / "one", "-q", *extra)
    assert one.exit_code == 0, one.output
    many = invoke(name, folder, "-m", model, "-o", tmp_path / "many", "-q", "-b", "2", *extra)
    assert many.exit_code == 0, many.output
    assert len(list((tmp_path / "many").glob("im*.png"))) == 3

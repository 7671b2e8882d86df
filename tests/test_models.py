"""Real-world models: nested bases, keras: applications, heads, formats and model errors."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.loading import load_model
from cnnvis_cli.errors import ModelError
from cnnvis_cli.methods.gradcam import GradCAM
from tests.conftest import export_saved_model, invoke, random_rgb, write_image

GRADIENT_METHODS = ["gradcam", "guided", "guided-gradcam"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    write_image(root / "a.png", random_rgb(40, 60, seed=5))
    write_image(root / "b.jpg", random_rgb(50, 30, seed=6))
    return root


@pytest.fixture(scope="module")
def transfer_model(keras_mod, tmp_path_factory):
    """The standard transfer-learning shape: a pretrained-style base inside a Sequential."""
    keras_mod.utils.set_random_seed(4)
    base = keras_mod.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(64, 64, 3), alpha=0.35
    )
    model = keras_mod.Sequential(
        [
            keras_mod.Input((64, 64, 3)),
            base,
            keras_mod.layers.GlobalAveragePooling2D(),
            keras_mod.layers.Dense(5, activation="softmax"),
        ]
    )
    path = tmp_path_factory.mktemp("transfer") / "transfer.keras"
    model.save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("method", [*GRADIENT_METHODS, "occlusion"])
def test_transfer_learning_model_runs_every_method(method, transfer_model, images, tmp_path):
    extra = ["--patch", "16", "--stride", "16"] if method == "occlusion" else []
    result = invoke(method, images, "-m", transfer_model, "-o", tmp_path, "-q", *extra)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["totals"]["processed"] == 2
    if method in ("gradcam", "guided-gradcam"):
        assert summary["params"]["layer"] == "mobilenetv2_0.35_64/out_relu"


def test_nested_layer_path_and_layers_command(transfer_model, tmp_path, images):
    result = invoke("layers", transfer_model)
    assert result.exit_code == 0
    assert "mobilenetv2_0.35_64/out_relu" in result.stdout
    assert "automatic Grad-CAM layer: mobilenetv2_0.35_64/out_relu" in result.stdout
    layer = "mobilenetv2_0.35_64/block_13_expand_relu"
    result = invoke("gradcam", images, "-m", transfer_model, "-o", tmp_path, "--layer", layer)
    assert result.exit_code == 0
    params = json.loads((tmp_path / "summary.json").read_text())["params"]
    assert params["layer"] == layer


@pytest.mark.slow
def test_keras_application_runs_all_methods(images, tmp_path):
    for method in [*GRADIENT_METHODS, "occlusion"]:
        extra = ["--patch", "56", "--stride", "56"] if method == "occlusion" else []
        out = tmp_path / method
        result = invoke(
            method,
            images,
            "-m",
            "keras:MobileNetV2",
            "--weights",
            "none",
            "-o",
            out,
            "-q",
            *extra,
        )
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["model"]["preprocess"] == "symmetric"
        assert isinstance(summary["results"][0]["class_name"], str)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "preprocess"),
    [("ResNet50", "caffe"), ("VGG16", "caffe"), ("EfficientNetB0", "raw"), ("ConvNeXtTiny", "raw")],
)
def test_keras_application_families(name, preprocess):
    adapter = load_model(f"keras:{name}", weights="none")
    assert adapter.preprocess_mode == preprocess
    assert adapter.num_classes == 1000 and len(adapter.class_names) == 1000
    assert adapter.class_names[281] == "tabby"
    assert adapter.head == "softmax"
    assert adapter.auto_layer().is_spatial


def test_missing_imagenet_weights_never_touch_the_network(tmp_path, monkeypatch):
    """An empty Keras cache: one line saying which file to put where, and no network call."""
    import socket

    import cnnvis_cli.core.zoo as zoo

    def no_network(*args, **kwargs):
        raise AssertionError("cnnvis tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    with pytest.raises(ModelError) as caught:
        zoo.load_application("keras:MobileNetV2")
    message = str(caught.value)
    expected = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
    assert f"put {expected} in {tmp_path / 'keras-home' / 'models'}/" in message
    assert "never downloads" in message
    with pytest.raises(ModelError, match="unknown Keras application"):
        zoo.load_application("keras:NotANet")


def test_cached_weights_are_used(keras_mod, tmp_path, monkeypatch):
    """A weights file in the cache is loaded without a download."""
    import cnnvis_cli.core.zoo as zoo

    cache = tmp_path / "keras-home" / "models"
    cache.mkdir(parents=True)
    model = keras_mod.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), alpha=1.0)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
    model.save(cache / name)  # the legacy HDF5 format the applications' weights files use
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    loaded, mode, names = zoo.load_application("keras:MobileNetV2")
    assert mode == "symmetric" and len(names) == 1000
    first = model.trainable_weights[0].numpy()
    np.testing.assert_array_equal(loaded.trainable_weights[0].numpy(), first)


def test_single_sigmoid_unit_scores_the_logit_both_ways(keras_mod, cam_model):
    inputs = keras_mod.Input((16, 20, 3))
    x = cam_model.get_layer("conv")(inputs)
    x = keras_mod.layers.GlobalAveragePooling2D()(x)
    dense = keras_mod.layers.Dense(1, activation="sigmoid")
    model = keras_mod.Model(inputs, dense(x))
    kernel, bias = cam_model.get_layer("head").get_weights()
    dense.set_weights([kernel[:, :1], bias[:1]])
    adapter = ModelAdapter(model, preprocess="raw")
    assert (adapter.head, adapter.num_classes) == ("sigmoid", 2)
    images = np.random.default_rng(0).uniform(0, 1, (3, 16, 20, 3)).astype(np.float32)
    probability = model(images).numpy()[:, 0]
    conv_output = cam_model.get_layer("conv").output
    features = keras_mod.Model(cam_model.inputs[0], conv_output)(images).numpy()
    for cls, sign in ((1, 1.0), (0, -1.0)):
        got = GradCAM.create(adapter, class_index=cls, batch_size=3).explain(images)
        cam = np.maximum(np.einsum("bhwk,k->bhw", features, sign * kernel[:, 0]), 0)
        low, high = cam.min(axis=(1, 2), keepdims=True), cam.max(axis=(1, 2), keepdims=True)
        expected = (cam - low) / (high - low + 1e-8)
        np.testing.assert_allclose(np.stack([e.maps[0] for e in got]), expected, atol=5e-5)
        score = probability if cls == 1 else 1 - probability
        np.testing.assert_allclose([e.outputs[0] for e in got], score, rtol=1e-5)
    top = GradCAM.create(adapter, batch_size=3).explain(images)
    assert [e.targets[0] for e in top] == list((probability > 0.5).astype(int))


def test_multi_output_model_picks_the_named_output(keras_mod, tmp_path, images):
    inputs = keras_mod.Input((16, 16, 3))
    x = keras_mod.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras_mod.layers.GlobalAveragePooling2D()(x)
    first = keras_mod.layers.Dense(3, activation="softmax", name="species")(x)
    second = keras_mod.layers.Dense(7, activation="softmax", name="colour")(x)
    model = keras_mod.Model(inputs, [first, second])
    path = tmp_path / "multi.keras"
    model.save(path)
    assert load_model(path).num_classes == 3
    adapter = load_model(path, output="colour")
    assert adapter.num_classes == 7 and adapter.head == "softmax"
    assert load_model(path, output="1").num_classes == 7
    with pytest.raises(ModelError, match="outputs: species, colour"):
        load_model(path, output="size")
    result = invoke("gradcam", images, "-m", path, "--output", "colour", "-o", tmp_path / "o")
    assert result.exit_code == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["model"]["output"] == "colour"


def test_dynamic_input_size_takes_each_image_at_its_own_size(keras_mod, tmp_path, images):
    model = keras_mod.Sequential(
        [
            keras_mod.Input((None, None, 3)),
            keras_mod.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras_mod.layers.GlobalAveragePooling2D(),
            keras_mod.layers.Dense(2),
        ]
    )
    path = tmp_path / "dynamic.keras"
    model.save(path)
    out = tmp_path / "o"
    result = invoke("gradcam", images, "-m", path, "-o", out, "--save-raw", "--max-size", "32")
    assert result.exit_code == 0, result.output
    for record in json.loads((out / "summary.json").read_text())["results"]:
        raw = np.load(record["outputs"]["raw"])
        assert raw.shape in {(40, 60), (50, 30)}


def test_mixed_precision_model_gives_float32_maps(keras_mod, images):
    keras_mod.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras_mod.Sequential(
            [
                keras_mod.Input((16, 16, 3)),
                keras_mod.layers.Conv2D(4, 3, activation="relu"),
                keras_mod.layers.GlobalAveragePooling2D(),
                keras_mod.layers.Dense(3, activation="softmax", dtype="float32"),
            ]
        )
    finally:
        keras_mod.mixed_precision.set_global_policy("float32")
    batch = np.random.default_rng(1).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    for explanation in GradCAM.create(ModelAdapter(model), batch_size=2).explain(batch):
        assert explanation.maps[0].dtype == np.float32
        assert np.isfinite(explanation.maps[0]).all() and explanation.maps[0].max() > 0


def test_saved_model_directory_runs_occlusion_only(keras_mod, tmp_path, images):
    model = keras_mod.Sequential(
        [
            keras_mod.Input((16, 16, 3)),
            keras_mod.layers.Conv2D(4, 3, activation="relu"),
            keras_mod.layers.GlobalAveragePooling2D(),
            keras_mod.layers.Dense(3, activation="softmax"),
        ]
    )
    export = tmp_path / "exported"
    export_saved_model(model, export)
    result = invoke("occlusion", images, "-m", export, "-o", tmp_path / "occ", "-q")
    assert result.exit_code == 0, result.output
    result = invoke("gradcam", images, "-m", export, "-o", tmp_path / "gc")
    assert result.exit_code == 2
    assert "forward passes only" in result.stderr and "occlusion" in result.stderr


def test_lambda_layer_needs_unsafe_load(keras_mod, tmp_path, images):
    model = keras_mod.Sequential(
        [
            keras_mod.Input((16, 16, 3)),
            keras_mod.layers.Lambda(lambda t: t * 2.0),
            keras_mod.layers.Conv2D(4, 3, activation="relu"),
            keras_mod.layers.GlobalAveragePooling2D(),
            keras_mod.layers.Dense(3),
        ]
    )
    path = tmp_path / "lambda.keras"
    model.save(path)
    result = invoke("gradcam", images, "-m", path, "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "--unsafe-load" in result.stderr
    result = invoke("gradcam", images, "-m", path, "-o", tmp_path / "o", "--unsafe-load")
    assert result.exit_code == 0, result.output


def test_custom_layer_needs_custom_objects_file(keras_mod, tmp_path, images):
    source = textwrap.dedent(
        """
        import keras

        class Doubler(keras.layers.Layer):
            def call(self, x):
                return x * 2.0
        """
    )
    namespace: dict = {}
    exec(compile(source, "custom_layers.py", "exec"), namespace)
    model = keras_mod.Sequential(
        [
            keras_mod.Input((16, 16, 3)),
            namespace["Doubler"](),
            keras_mod.layers.Conv2D(4, 3, activation="relu"),
            keras_mod.layers.GlobalAveragePooling2D(),
            keras_mod.layers.Dense(3),
        ]
    )
    path = tmp_path / "custom.keras"
    model.save(path)
    result = invoke("gradcam", images, "-m", path, "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "--custom-objects" in result.stderr and "Doubler" in result.stderr
    objects = tmp_path / "custom_layers.py"
    objects.write_text(source)
    result = invoke(
        "gradcam", images, "-m", path, "-o", tmp_path / "o", "--custom-objects", objects
    )
    assert result.exit_code == 0, result.output


def test_legacy_h5_file_loads(keras_mod, cam_model, tmp_path):
    path = tmp_path / "legacy.h5"
    cam_model.save(path)
    adapter = load_model(path, preprocess="raw")
    assert adapter.auto_layer().path == "conv"
    images = np.random.default_rng(3).uniform(0, 1, (2, 16, 20, 3)).astype(np.float32)
    got = GradCAM.create(adapter, batch_size=2).explain(images)
    expected = GradCAM.create(ModelAdapter(cam_model, preprocess="raw"), batch_size=2).explain(
        images
    )
    np.testing.assert_allclose(got[0].maps[0], expected[0].maps[0], atol=1e-6)


def test_model_without_spatial_layer_suggests_occlusion(keras_mod, tmp_path, images):
    model = keras_mod.Sequential(
        [
            keras_mod.Input((8, 8, 3)),
            keras_mod.layers.Flatten(),
            keras_mod.layers.Dense(3),
        ]
    )
    path = tmp_path / "flat.keras"
    model.save(path)
    result = invoke("gradcam", images, "-m", path, "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "occlusion" in result.stderr
    assert invoke("occlusion", images, "-m", path, "-o", tmp_path / "p", "-q").exit_code == 0

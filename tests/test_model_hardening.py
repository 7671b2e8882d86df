"""Models from outside: NaN outputs, several inputs, zip bombs, quantized heads, captures that do
not fire, Keras-2 transfer-learning files with nested application backbones, and layers that
reorder the image's axes."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.loading import load_model
from cnnvis_cli.errors import ModelError
from cnnvis_cli.methods.gradcam import GradCAM
from tests.conftest import invoke, random_rgb, write_image


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    write_image(root / "a.png", random_rgb(30, 40, seed=1))
    write_image(root / "b.png", random_rgb(36, 36, seed=2))
    return root


def small_cnn(keras, size=(16, 16), classes=3, activation="softmax"):
    return keras.Sequential(
        [
            keras.Input((*size, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(classes, activation=activation, name="head"),
        ]
    )


def _refuse(name: str) -> None:
    raise AssertionError(f"summary.json holds the non-JSON constant {name}")


def test_non_finite_output_is_a_per_image_error_and_json_stays_strict(keras_mod, tmp_path, images):
    model = small_cnn(keras_mod)
    kernel, bias = model.get_layer("head").get_weights()
    model.get_layer("head").set_weights([np.full_like(kernel, np.nan), bias])
    path = tmp_path / "nan.keras"
    model.save(path)
    for extra in ([], ["--metrics", "deletion,insertion"]):
        out = tmp_path / f"out{len(extra)}"
        result = invoke("gradcam", images, "-m", path, "-o", out, *extra)
        assert result.exit_code == 1, result.output
        summary = json.loads((out / "summary.json").read_text(), parse_constant=_refuse)
        assert {r["error"] for r in summary["results"]} == {
            "the model's output is not finite (NaN or infinity) for this image; check the model "
            "and its preprocessing (--preprocess)"
        }
        assert "Traceback" not in result.output


def test_two_input_model_is_one_line_exit_2(keras_mod, tmp_path, images):
    first, second = keras_mod.Input((16, 16, 3)), keras_mod.Input((4,))
    x = keras_mod.layers.GlobalAveragePooling2D()(keras_mod.layers.Conv2D(4, 3)(first))
    x = keras_mod.layers.Concatenate()([x, second])
    model = keras_mod.Model([first, second], keras_mod.layers.Dense(2)(x))
    path = tmp_path / "two.keras"
    model.save(path)
    result = invoke("gradcam", images, "-m", path, "-o", tmp_path / "o")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "the model has 2 inputs" in line


def test_zip_bomb_keras_file_is_refused_before_keras_reads_it(tmp_path, images):
    path = tmp_path / "bomb.keras"
    zero = bytes(2**20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", '{"keras_version": "3.0.0"}')
        with archive.open("config.json", "w", force_zip64=True) as member:
            for _ in range(96):  # 96 MiB of zeros: ~100 KiB on disk
                member.write(zero)
    assert path.stat().st_size < 2**20
    result = invoke("gradcam", images, "-m", path, "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "refusing to load" in result.stderr and "config.json" in result.stderr


@pytest.mark.filterwarnings("ignore:Layer .* does not have a `quantize` method")
def test_quantized_head_still_scores_the_logit(keras_mod):
    keras_mod.utils.set_random_seed(3)
    model = small_cnn(keras_mod, classes=4)
    model.quantize("int8")
    adapter = ModelAdapter(model, preprocess="raw")
    images = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
    import tensorflow as tf

    forward = adapter.forward(tf.constant(images))
    logits, outputs = forward.logits.numpy(), forward.outputs.numpy()
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), outputs, atol=1e-5)
    assert np.abs(logits - outputs).max() > 1e-2  # logits, not the probabilities again
    explanations = GradCAM.create(adapter, batch_size=3).explain(images)
    assert all(np.isfinite(e.maps[0]).all() for e in explanations)


def test_a_capture_that_does_not_fire_is_an_error(keras_mod, tmp_path, images):
    inputs = keras_mod.Input((16, 16, 3))
    used = keras_mod.layers.Conv2D(4, 3, name="used")(inputs)
    keras_mod.layers.Conv2D(4, 3, name="unused")(inputs)  # built, never on the output's path
    outputs = keras_mod.layers.Dense(2)(keras_mod.layers.GlobalAveragePooling2D()(used))
    model = keras_mod.Model(inputs, outputs)
    adapter = ModelAdapter(model, preprocess="raw")
    unused = keras_mod.layers.Conv2D(4, 3, name="detached")
    unused.build((None, 16, 16, 3))
    from cnnvis_cli.core.adapter import LayerInfo

    orphan = LayerInfo("detached", unused, "Conv2D", (None, 14, 14, 4))
    with pytest.raises(ModelError, match="'detached' was not called in the forward pass"):
        adapter.forward(np.zeros((1, 16, 16, 3), np.float32), orphan)


@pytest.mark.parametrize(
    ("backbone", "expected"),
    [
        ("MobileNetV2", "symmetric"),
        ("ResNet50", "caffe"),
        ("VGG16", "caffe"),
        ("EfficientNetB0", "raw"),
    ],
)
def test_nested_application_backbone_in_a_legacy_h5_gets_its_preprocessing(
    keras_mod, tmp_path, backbone, expected
):
    size = 32
    base = getattr(keras_mod.applications, backbone)(
        include_top=False, weights=None, input_shape=(size, size, 3)
    )
    model = keras_mod.Sequential(
        [
            keras_mod.Input((size, size, 3)),
            base,
            keras_mod.layers.GlobalAveragePooling2D(),
            keras_mod.layers.Dense(2, activation="softmax"),
        ]
    )
    path = tmp_path / "transfer.h5"  # the legacy HDF5 format Keras 2 wrote
    model.save(path)
    adapter = load_model(path)
    assert adapter.preprocess_mode == expected
    assert base.name in adapter.preprocess_reason or "Rescaling" in adapter.preprocess_reason
    result = invoke("layers", path)
    assert result.exit_code == 0
    assert f"preprocess {expected}" in result.stdout
    assert load_model(path, preprocess="unit").preprocess_mode == "unit"  # the user decides


def permuted_model(keras):
    """A face-detector-like output network: PReLU, a Permute((2, 1, 3)) before Flatten, heads."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input((12, 20, 3))  # not square: a transposed map cannot be overlaid
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu2")(x)
    p = keras.layers.Permute((2, 1, 3), name="permute")(x)
    flat = keras.layers.Flatten()(p)
    classes = keras.layers.Dense(2, activation="softmax", name="classes")(flat)
    boxes = keras.layers.Dense(4, name="boxes")(flat)
    landmarks = keras.layers.Dense(10, name="landmarks")(flat)
    return keras.Model(inputs, [classes, boxes, landmarks])


def test_automatic_layer_never_permutes_axes(keras_mod, tmp_path, images):
    model = permuted_model(keras_mod)
    adapter = ModelAdapter(model, preprocess="unit")
    assert adapter.auto_layer().path == "prelu2"
    assert "permute" not in [info.path for info in adapter.spatial_layers()]
    with pytest.raises(ModelError, match="reorders or reshapes the image's axes"):
        adapter.resolve_layer("permute")
    # the automatic map is the map at prelu2, with the image's orientation
    image = np.random.default_rng(1).uniform(0, 255, (1, 12, 20, 3)).astype(np.float32)
    auto = GradCAM.create(adapter).explain(image)[0].maps[0]
    explicit = GradCAM.create(adapter, layer="prelu2").explain(image)[0].maps[0]
    assert auto.shape == (12, 20)
    np.testing.assert_array_equal(auto, explicit)
    path = tmp_path / "faces.keras"
    model.save(path)
    listing = invoke("layers", path, "--all")
    assert listing.exit_code == 0
    assert "* prelu2" in listing.stdout and "* permute" not in listing.stdout
    result = invoke("gradcam", images, "-m", path, "--layer", "permute", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "reorders or reshapes" in result.stderr

"""Activation maximisation: the objective rises far above the noise start, seeded and
batch-independent images, filter/size parsing, and the ``cnnvis maximize`` command."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.tracing import weight_gradient_ops
from cnnvis_cli.visualize.maximize import (
    Maximizer,
    MaximizeSettings,
    class_objective,
    filter_objective,
    parse_filters,
    parse_size,
)
from tests.conftest import export_saved_model, invoke

SIZE = (20, 24)
# the probes call the functional models on bare arrays
pytestmark = pytest.mark.filterwarnings("ignore:The structure of `inputs`:UserWarning")


def build_model(keras, size=SIZE, seed: int = 0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*size, 3))
    init = keras.initializers.RandomNormal(0, 0.5)  # trained-like scales: logits of a few units
    conv = {"padding": "same", "activation": "relu", "kernel_initializer": init}
    x = keras.layers.Conv2D(8, 3, name="conv1", **conv)(inputs)
    x = keras.layers.Conv2D(6, 3, name="conv2", **conv)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(4, name="logits", kernel_initializer=init)(x)
    return keras.Model(inputs, keras.layers.Softmax()(logits))


@pytest.fixture(scope="module")
def model(keras_mod):
    return build_model(keras_mod)


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("maximize") / "small.keras"
    model.save(path)
    (path.parent / "small.classes.json").write_text('["ant", "bee", "cat", "dog"]')
    return path


def logits_of(model, images01):
    """The logits (before the Softmax layer) of [0, 1] images, from a probe model."""
    import tensorflow as tf

    probe = tf.keras.Model(model.inputs, model.get_layer("logits").output)
    return probe(np.asarray(images01, np.float32)).numpy()


def test_parse_filters_and_size():
    assert parse_filters("0-3") == [0, 1, 2, 3]
    assert parse_filters("5, 0,2-3,2") == [5, 0, 2, 3]
    assert parse_filters("7", count=8) == [7]
    for bad in ("3-1", "a", "1-", ""):
        with pytest.raises(ValueError, match="--filters"):
            parse_filters(bad)
    with pytest.raises(ValueError, match="out of range"):
        parse_filters("6-8", count=8)
    assert parse_size("32x48") == (32, 48) and parse_size("64") == (64, 64)
    with pytest.raises(ValueError, match="--size"):
        parse_size("3x")


def test_class_logit_rises_far_above_noise(model):
    """Each optimised image's logit lies many standard deviations above the logits of random
    noise images, and the reported score is the logit of the written image."""
    adapter = ModelAdapter(model, preprocess="unit")
    maximizer = Maximizer(adapter, class_objective(adapter, ["1", "3"]), MaximizeSettings(40))
    results = maximizer.run()
    images = np.stack([r.image for r in results]).astype(np.float32) / 255.0
    logits = logits_of(model, images)
    noise = logits_of(model, np.random.default_rng(0).uniform(0, 1, (64, *SIZE, 3)))
    for row, (result, cls) in enumerate(zip(results, (1, 3), strict=True)):
        assert result.image.shape == (*SIZE, 3) and result.image.dtype == np.uint8
        assert logits[row, cls] == pytest.approx(result.final_score, abs=0.05)  # 8-bit rounding
        spread = noise[:, cls].std()
        assert (result.final_score - noise[:, cls].mean()) / spread > 8
        assert (result.final_score - result.start_score) / spread > 5
    assert maximizer.trace_counts() == {"step_fn": 1, "score_fn": 1}
    assert weight_gradient_ops(maximizer.functions) == set()


@pytest.mark.slow
def test_demo_model_class_logit_rises(tmp_path):
    """On the bundled demo model 100 steps take the cross logit from about 0 to above 15."""
    from cnnvis_cli.demo.paths import demo_model_path

    out = tmp_path / "demo"
    result = invoke(
        "maximize", "-m", demo_model_path(), "--class", "cross", "-o", out, "--steps", 100, "-q"
    )
    assert result.exit_code == 0, result.output
    item = json.loads((out / "summary.json").read_text())["results"][0]
    assert abs(item["start_score"]) < 3 and item["final_score"] > 15


def test_filter_activation_rises_far_above_noise(model):
    import tensorflow as tf

    adapter = ModelAdapter(model, preprocess="unit")
    objective = filter_objective(adapter, "conv2", "0-2")
    results = Maximizer(adapter, objective, MaximizeSettings(steps=30)).run()
    assert [r.target.index for r in results] == [0, 1, 2]
    probe = tf.keras.Model(model.inputs, model.get_layer("conv2").output)
    noise = np.random.default_rng(1).uniform(0, 1, (64, *SIZE, 3)).astype(np.float32)
    noise_means = probe(noise).numpy().mean(axis=(1, 2))  # (64, filters)
    written = np.stack([r.image for r in results]).astype(np.float32) / 255.0
    means = probe(written).numpy().mean(axis=(1, 2))
    assert any(r.start_score > 0 for r in results)
    for row, result in enumerate(results):
        f = result.target.index
        assert means[row, f] == pytest.approx(result.final_score, rel=0.02, abs=0.02)
        if result.start_score > 0:  # a filter silent at the start gets no gradient
            spread = noise_means[:, f].std()
            assert (result.final_score - noise_means[:, f].mean()) / spread > 5


def test_seeded_and_independent_of_batching(model):
    adapter = ModelAdapter(model, preprocess="unit")
    objective = class_objective(adapter, ["0", "2", "3"])

    def images(**kwargs):
        settings = MaximizeSettings(steps=6, **kwargs)
        return np.stack([r.image for r in Maximizer(adapter, objective, settings).run()])

    first = images(seed=4, batch=3)
    np.testing.assert_array_equal(images(seed=4, batch=3), first)
    split = images(seed=4, batch=2)  # groups of 2 (the second padded)
    assert np.abs(split.astype(int) - first.astype(int)).max() <= 1
    assert np.abs(images(seed=5, batch=3).astype(int) - first.astype(int)).max() > 20


def test_command_writes_pngs_grid_and_summary(model_file, tmp_path):
    out = tmp_path / "viz"
    result = invoke(
        "maximize", "-m", model_file, "--class", "bee", "--class", "3", "-o", out, "--steps", 8
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"] == "logit" and summary["size"] == list(SIZE)
    files = [r["file"] for r in summary["results"]]
    assert files == ["class_001_bee.png", "class_003_dog.png"]
    for name in files:
        assert cv2.imread(str(out / name)).shape == (*SIZE, 3)
    grid = cv2.imread(str(out / "grid.png"))
    assert grid.shape[0] > 160 and grid.shape[1] > 2 * 160 * SIZE[1] / SIZE[0]
    assert all(r["final_score"] > r["start_score"] for r in summary["results"])


def test_command_filters_and_canvas_size(model_file, tmp_path):
    out = tmp_path / "filters"
    args = ["--layer", "conv1", "--filters", "0-4", "--size", "32x40", "--steps", 3, "-q"]
    result = invoke("maximize", "-m", model_file, "-o", out, "-b", 2, *args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layer"] == "conv1" and len(summary["results"]) == 5
    for item in summary["results"]:
        assert cv2.imread(str(out / item["file"])).shape == (32, 40, 3)
    assert summary["results"][0]["file"] == "conv1_filter_0000.png"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--class", "zebra"], "unknown class"),
        (["--class", "9"], "out of range"),
        (["--layer", "nope"], "no layer"),
        (["--layer", "conv2", "--filters", "0-6"], "out of range"),
        (["--layer", "conv2", "--filters", "x"], "--filters"),
        (["--layer", "conv2", "--class", "1"], "either"),
        ([], "either"),
        (["--class", "1", "--size", "big"], "--size"),
    ],
)
def test_command_errors_exit_2(model_file, tmp_path, args, message):
    result = invoke("maximize", "-m", model_file, "-o", tmp_path / "x", "--steps", 1, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_saved_model_directory_is_refused(keras_mod, model, tmp_path):
    export = tmp_path / "exported"
    export_saved_model(model, export)
    result = invoke("maximize", "-m", export, "--class", "1", "-o", tmp_path / "x")
    assert result.exit_code == 2 and "forward passes only" in result.stderr

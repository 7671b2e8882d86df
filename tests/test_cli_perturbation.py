"""RISE, KernelSHAP, LIME and Sobol from the command line: a saved model, a SavedModel folder,
``compare`` and the bundled demo model."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cnnvis_cli.demo.paths import demo_model_path, sample_images_dir
from tests.conftest import export_saved_model, invoke, random_rgb, write_image

FAST = {
    "rise": ["--samples", "32", "--grid", "4"],
    "kernelshap": ["--samples", "24", "--segments", "grid", "--n-segments", "6"],
    "lime": ["--samples", "24", "--n-segments", "8"],
    "sobol": ["--designs", "4", "--grid", "3"],
}
SIGNED = {"kernelshap", "lime"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image(root / "wide.png", random_rgb(30, 52, seed=1))
    write_image(root / "tall.jpg", random_rgb(61, 27, seed=2))
    return root


@pytest.mark.parametrize("method", list(FAST))
def test_method_writes_overlay_raw_and_facts(method, folder, saved_model, tmp_path):
    out = tmp_path / method
    args = FAST[method]
    result = invoke(method, folder, "-m", saved_model, "-o", out, "--save-raw", "-q", *args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and summary["totals"]["processed"] == 2
    for record in summary["results"]:
        height, width = cv2.imread(record["input"]).shape[:2]
        assert cv2.imread(record["outputs"]["overlay"]).shape == (height, width, 3)
        raw = np.load(record["outputs"]["raw"])
        assert raw.dtype == np.float32 and raw.shape == (height, width) and np.isfinite(raw).all()
        low = -1.0 if method in SIGNED else 0.0
        assert raw.min() >= low and raw.max() <= 1.0 and np.abs(raw).max() > 0.5
        assert 0 <= record["score"] <= 1  # the record's own score is the target's output
    first = summary["results"][0]
    if method == "kernelshap":
        assert first["segments"] == 6 and first["exact"] is False and first["coalitions"] == 24
    elif method == "lime":
        assert first["segments"] >= 1 and len(first["surrogate_r2"]) == 1
    elif method == "sobol":
        assert first["forwards"] == 4 * 10 and summary["params"]["forwards_per_image"] == 40
    elif method == "rise":
        assert summary["params"]["samples"] == 32 and summary["params"]["grid"] == 4


def test_same_seed_same_map_other_seed_other_map(folder, saved_model, tmp_path):
    maps = []
    for seed, name in ((3, "a"), (3, "b"), (4, "c")):
        out = tmp_path / name
        args = ["--samples", "16", "--seed", seed, "--save-raw", "-q", "-b", "1"]
        result = invoke("rise", folder / "wide.png", "-m", saved_model, "-o", out, *args)
        assert result.exit_code == 0, result.output
        maps.append(np.load(next(out.glob("*.npy"))))
    np.testing.assert_array_equal(maps[0], maps[1])
    assert not np.allclose(maps[0], maps[2])


def test_bad_options_are_usage_errors(folder, saved_model, tmp_path):
    cases = [
        ("sobol", "--designs", "24", "power of two"),
        ("kernelshap", "--segments", "quickshift", "--segments"),
        ("rise", "--keep-prob", "0", "--keep-prob"),
        ("lime", "--baseline", "purple", "--baseline"),
    ]
    for method, flag, value, message in cases:
        result = invoke(method, folder, "-m", saved_model, "-o", tmp_path / method, flag, value)
        assert result.exit_code == 2, (method, result.output)
        assert message in result.stderr


@pytest.mark.slow
def test_perturbation_methods_run_on_a_saved_model_directory(keras_mod, folder, tmp_path):
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
    for method, args in FAST.items():
        result = invoke(method, folder, "-m", export, "-o", tmp_path / method, "-q", *args)
        assert result.exit_code == 0, (method, result.output)


@pytest.mark.slow
def test_dynamic_input_size_model(keras_mod, folder, tmp_path):
    """Images of different sizes through a model without a fixed input size."""
    keras_mod.utils.set_random_seed(5)
    inputs = keras_mod.Input((None, None, 3))
    x = keras_mod.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras_mod.layers.GlobalMaxPooling2D()(x)
    model = keras_mod.Model(inputs, keras_mod.layers.Dense(3, activation="softmax")(x))
    path = tmp_path / "dynamic.keras"
    model.save(path)
    for method, args in FAST.items():
        out = tmp_path / method
        result = invoke(method, folder, "-m", path, "-o", out, "--save-raw", "-q", *args)
        assert result.exit_code == 0, (method, result.output)
        for record in json.loads((out / "summary.json").read_text())["results"]:
            height, width = cv2.imread(record["input"]).shape[:2]
            assert np.load(record["outputs"]["raw"]).shape == (height, width)


def test_compare_runs_the_black_box_methods(folder, saved_model, tmp_path):
    out = tmp_path / "cmp"
    methods = "rise,kernelshap,sobol"
    args = ["--methods", methods, "--samples", "64", "--designs", "4", "--save-raw", "-q"]
    result = invoke("compare", folder, "-m", saved_model, "-o", out, *args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    params = summary["params"]
    assert params["methods"] == methods.split(",")
    assert params["rise"]["samples"] == 64 and params["kernelshap"]["samples"] == 64
    assert params["sobol"]["designs"] == 4
    for record in summary["results"]:
        height, width = cv2.imread(record["input"]).shape[:2]
        panel = cv2.imread(record["outputs"]["overlay"])
        assert panel.shape[1] == 4 * round(width * 256 / height) + 3 * 6
        for name in methods.split(","):
            assert np.load(record["outputs"][f"raw_{name}"]).shape == (height, width)


@pytest.mark.slow
@pytest.mark.parametrize("method", list(FAST))
def test_demo_model_end_to_end(method, tmp_path):
    """On the bundled demo model, the map's hottest point lies on the labelled shape."""
    samples = sample_images_dir()
    boxes = json.loads((samples / "boxes.json").read_text())
    name = "scene_01.png"
    args = {
        "rise": ["--samples", "500"],
        "kernelshap": ["--samples", "256", "--n-segments", "30"],
        "lime": ["--samples", "256", "--n-segments", "30"],
        "sobol": ["--designs", "16"],
    }[method]
    out = tmp_path / method
    result = invoke(
        method, samples / name, "-m", demo_model_path(), "-o", out, "--save-raw", "-q", *args
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "summary.json").read_text())["results"][0]
    raw = np.load(record["outputs"]["raw"])
    y, x = np.unravel_index(np.argmax(raw), raw.shape)
    box = boxes[name]
    assert box[0] <= x <= box[2] and box[1] <= y <= box[3], (box, (x, y))

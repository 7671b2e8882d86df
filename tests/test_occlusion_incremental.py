"""Occlusion with the incremental engine: equal to naive occlusion, chosen only when it pays, and
the approximations reported as such. The engine's own exactness tests: test_incremental.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.methods.occlusion import Occlusion
from tests.conftest import export_saved_model, invoke, random_rgb, write_image


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("occ")
    write_image(root / "a.png", random_rgb(40, 30, seed=1))
    write_image(root / "b.png", random_rgb(20, 50, seed=2))
    return root


def residual_model(keras, size=(32, 32), head="softmax", units=4):
    """Convs, a 1x1 stride-2 projection shortcut, pooling: everything incremental."""
    keras.utils.set_random_seed(11)
    inputs = keras.Input((*size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    shortcut = keras.layers.Conv2D(12, 1, strides=2, use_bias=False)(x)
    y = keras.layers.Conv2D(12, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Add()([shortcut, y])
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(units, activation=head)(x))


def se_model(keras, size=(32, 32)):
    """A squeeze-excite block right after the first conv: the gate's window is the whole map."""
    keras.utils.set_random_seed(12)
    inputs = keras.Input((*size, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = keras.layers.Conv2D(8, 1, activation="sigmoid")(gate)
    x = keras.layers.Multiply()([x, gate])
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def _raw_maps(out) -> dict[str, np.ndarray]:
    summary = json.loads((out / "summary.json").read_text())
    return {r["input"]: np.load(r["outputs"]["raw"]) for r in summary["results"]}, summary


@pytest.mark.parametrize(
    ("head", "units", "extra"),
    [("softmax", 4, ["--top-k", "2"]), ("sigmoid", 1, ["--signed"])],
    ids=["softmax-top2", "binary-sigmoid-signed"],
)
def test_incremental_on_equals_off_from_the_command_line(
    keras_mod, tmp_path, images, head, units, extra
):
    path = tmp_path / "res.keras"
    residual_model(keras_mod, head=head, units=units).save(path)
    maps = {}
    for mode in ("off", "on"):
        out = tmp_path / mode
        args = ["--incremental", mode, "--patch", "6", "--stride", "3", "--save-raw", "-q"]
        result = invoke("occlusion", images, "-m", path, "-o", out, *args, *extra)
        assert result.exit_code == 0, result.output
        maps[mode], summary = _raw_maps(out)
        assert summary["params"]["engine"] == ("incremental" if mode == "on" else "naive")
        assert all(r["engine"] == summary["params"]["engine"] for r in summary["results"])
    for key, naive in maps["off"].items():
        incremental = maps["on"][key]
        assert np.abs(naive).max() > 0.1
        np.testing.assert_allclose(incremental, naive, atol=1e-3)
        assert np.corrcoef(incremental.ravel(), naive.ravel())[0, 1] > 0.99999


def test_auto_picks_incremental_only_when_it_pays(keras_mod):
    plain = ModelAdapter(residual_model(keras_mod), preprocess="unit")
    chosen = Occlusion.create(plain, patch=4, stride=2)
    assert chosen.incremental and chosen.estimate.pays_off
    assert chosen.params()["estimate"]["flop_ratio"] < 0.75
    assert "incremental inference (exact)" in chosen.notes()[0]
    gated = ModelAdapter(se_model(keras_mod), preprocess="unit")
    refused = Occlusion.create(gated, patch=4, stride=2)
    assert not refused.incremental and refused.params()["engine"] == "naive"
    assert not refused.estimate.pays_off and "naive" in refused.notes()[0]
    forced = Occlusion.create(gated, patch=4, stride=2, incremental="on")
    assert forced.incremental  # the user's choice wins; still exact
    image = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(forced.drop_maps(image), refused.drop_maps(image), atol=1e-4 * 255)


def test_incremental_on_where_it_cannot_run_is_a_usage_error(keras_mod, tmp_path, images):
    flat = keras_mod.Sequential(
        [keras_mod.Input((8, 8, 3)), keras_mod.layers.Flatten(), keras_mod.layers.Dense(2)]
    )
    path = tmp_path / "flat.keras"
    flat.save(path)
    result = invoke("occlusion", images, "-m", path, "-o", tmp_path / "o", "--incremental", "on")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "nothing of this model can be computed incrementally" in line and "flatten" in line
    auto = invoke("occlusion", images, "-m", path, "-o", tmp_path / "p", "-q")
    assert auto.exit_code == 0  # auto falls back to naive occlusion
    bad = invoke("occlusion", images, "-m", path, "-o", tmp_path / "q", "--incremental", "maybe")
    assert bad.exit_code == 2 and "auto, on or off" in bad.stderr


def test_approximations_are_reported_and_cheaper(keras_mod, tmp_path, images):
    path = tmp_path / "res.keras"
    residual_model(keras_mod).save(path)
    out = tmp_path / "approx"
    args = ["--approximate", "0.5", "--drill-down", "--patch", "4", "--stride", "2", "-q"]
    result = invoke("occlusion", images, "-m", path, "-o", out, "--save-raw", *args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"]["engine"] == "incremental, approximate tau=0.5, drill-down"
    for record in summary["results"]:
        assert record["evaluated"] < record["positions"]  # drill-down skipped positions
        assert np.load(record["outputs"]["raw"]).max() > 0
    off = invoke(
        "occlusion",
        images,
        "-m",
        path,
        "-o",
        tmp_path / "x",
        "--incremental",
        "off",
        "--approximate",
        "0.4",
    )
    assert off.exit_code == 2 and "--approximate needs incremental inference" in off.stderr


@pytest.mark.slow
def test_a_saved_model_runs_naive_and_refuses_on(keras_mod, tmp_path, images):
    model = residual_model(keras_mod)
    export = tmp_path / "exported"
    export_saved_model(model, export)
    result = invoke("occlusion", images, "-m", export, "-o", tmp_path / "o", "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["params"]["engine"] == "naive"
    forced = invoke("occlusion", images, "-m", export, "-o", tmp_path / "p", "--incremental", "on")
    assert forced.exit_code == 2 and "fixed input size" in forced.stderr


def test_compare_runs_occlusion_incrementally(keras_mod, tmp_path, images):
    path = tmp_path / "res.keras"
    residual_model(keras_mod).save(path)
    out = tmp_path / "cmp"
    result = invoke(
        "compare",
        images,
        "-m",
        path,
        "-o",
        out,
        "--methods",
        "gradcam,occlusion",
        "--incremental",
        "on",
        "-q",
    )
    assert result.exit_code == 0, result.output
    params = json.loads((out / "summary.json").read_text())["params"]
    assert params["occlusion"]["engine"] == "incremental"

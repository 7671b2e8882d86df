"""Occlusion, guided back-propagation, guided Grad-CAM and compare from the command line."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cnnvis_cli.output.legend import legend_layout
from tests.conftest import invoke, random_rgb, write_image


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image(root / "wide.png", random_rgb(30, 52, seed=1))
    write_image(root / "tall.jpg", random_rgb(61, 27, seed=2))
    return root


HEATMAP_METHODS = [
    "occlusion",
    "gradcam-pp",
    "hirescam",
    "layercam",
    "saliency",
    "smoothgrad",
    "integrated-gradients",
    "scorecam",
]


@pytest.mark.parametrize("method", [*HEATMAP_METHODS, "guided", "guided-gradcam"])
def test_method_writes_overlay_and_raw_at_input_size(method, folder, saved_model, tmp_path):
    out = tmp_path / method
    fast = {"smoothgrad": ["--samples", "4"], "integrated-gradients": ["--steps", "8"]}
    args = fast.get(method, [])
    result = invoke(method, folder, "-m", saved_model, "-o", out, "--save-raw", "-q", *args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == method and summary["totals"]["processed"] == 2
    for record in summary["results"]:
        height, width = cv2.imread(record["input"]).shape[:2]
        assert cv2.imread(record["outputs"]["overlay"]).shape == (height, width, 3)
        raw = np.load(record["outputs"]["raw"])
        assert raw.dtype == np.float32 and np.isfinite(raw).all()
        if method in HEATMAP_METHODS:
            assert raw.shape == (height, width) and raw.min() >= 0 and raw.max() <= 1
        else:  # signed gradient, one value per channel
            assert raw.shape == (height, width, 3)


def test_occlusion_options_reach_the_method(folder, saved_model, tmp_path):
    out = tmp_path / "occ"
    args = ["--patch", "5", "--stride", "3", "--baseline", "gray", "--signed", "-q"]
    result = invoke("occlusion", folder, "-m", saved_model, "-o", out, "--save-raw", *args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    params = summary["params"]
    assert (params["patch"], params["stride"], params["baseline"], params["signed"]) == (
        5,
        3,
        "gray",
        True,
    )
    raw = np.load(summary["results"][0]["outputs"]["raw"])
    assert raw.min() >= -1 and raw.max() <= 1


def test_occlusion_bad_patch_is_a_usage_error(folder, saved_model, tmp_path):
    result = invoke("occlusion", folder, "-m", saved_model, "-o", tmp_path, "--patch", "99")
    assert result.exit_code == 2
    assert "patch" in result.stderr


def test_compare_writes_one_labelled_panel_per_image(folder, saved_model, tmp_path):
    out = tmp_path / "cmp"
    result = invoke("compare", folder, "-m", saved_model, "-o", out, "-q", "--save-raw")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"]["methods"] == ["gradcam", "occlusion", "guided-gradcam"]
    for record in summary["results"]:
        height, width = cv2.imread(record["input"]).shape[:2]
        panel = cv2.imread(record["outputs"]["overlay"])
        tile_width = round(width * 256 / height)
        legend = legend_layout(tile_width, text=False).height  # a colour bar under each map
        assert panel.shape[0] == 32 + 28 + 256 + legend  # header + titles + tiles + legends
        assert panel.shape[1] == 4 * tile_width + 3 * 6
        for name in ("gradcam", "occlusion", "guided-gradcam"):
            assert record["outputs"][f"raw_{name}"].endswith(f"_{name}.npy")
    plain = tmp_path / "plain"
    args = ["--methods", "gradcam,saliency", "--no-legend", "-q"]
    assert invoke("compare", folder, "-m", saved_model, "-o", plain, *args).exit_code == 0
    for record in json.loads((plain / "summary.json").read_text())["results"]:
        assert cv2.imread(record["outputs"]["overlay"]).shape[0] == 32 + 28 + 256


def test_unknown_compare_method_is_a_usage_error(folder, saved_model, tmp_path):
    result = invoke("compare", folder, "-m", saved_model, "-o", tmp_path, "--methods", "foo")
    assert result.exit_code == 2
    assert "unknown method" in result.stderr


def test_unguided_layers_are_reported(keras_mod, folder, tmp_path):
    model = keras_mod.Sequential(
        [
            keras_mod.Input((16, 16, 3)),
            keras_mod.layers.Conv2D(4, 3, activation="swish", name="swishy"),
            keras_mod.layers.GlobalAveragePooling2D(),
            keras_mod.layers.Dense(2, activation="softmax"),
        ]
    )
    path = tmp_path / "swish.keras"
    model.save(path)
    result = invoke("guided", folder, "-m", path, "-o", tmp_path / "out")
    assert result.exit_code == 0
    assert "unguided: swishy" in result.stderr


def test_integrated_gradients_reports_completeness_per_image(folder, saved_model, tmp_path):
    out = tmp_path / "ig"
    result = invoke(
        "integrated-gradients", folder, "-m", saved_model, "-o", out, "--steps", "64", "-q"
    )
    assert result.exit_code == 0, result.output
    for record in json.loads((out / "summary.json").read_text())["results"]:
        gap = record["completeness_gap"][0]
        assert gap is None or 0 <= gap < 0.05

"""Conventions where libraries differ, pinned: how a layer-resolution map is upsampled.

The README's conventions table points here (upsampling) and at the method tests for the rest
(Score-CAM's weights and mask space in test_scorecam.py, Integrated Gradients' step count and
baseline and SmoothGrad's noise scale in test_gradient_methods.py, Grad-CAM++'s denominator in
test_cam_family.py).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cnnvis_cli.output.render import resize_map
from tests.conftest import invoke, random_rgb, write_image


@pytest.fixture(scope="module")
def tf():
    from cnnvis_cli.core.tf import tf_and_keras

    return tf_and_keras()[0]


@pytest.mark.parametrize("size", [(37, 50), (8, 10), (224, 224), (3, 4)])
def test_upsampling_modes_match_the_libraries_they_name(tf, size):
    low = np.random.default_rng(0).random((4, 5)).astype(np.float32)
    batch = low[None, :, :, None]
    # bilinear, half-pixel centres: tf.image.resize (and PyTorch align_corners=False)
    bilinear = tf.image.resize(batch, size, method="bilinear").numpy()[0, :, :, 0]
    np.testing.assert_allclose(resize_map(low, *size), bilinear, atol=1e-6)
    # aligned corners (tf-keras-vis): corner centres onto corner centres, x_in = x_out (w - 1)
    # / (W - 1), here as two passes of NumPy's 1-D linear interpolation
    rows = np.linspace(0, low.shape[0] - 1, size[0])
    cols = np.linspace(0, low.shape[1] - 1, size[1])
    across = np.stack([np.interp(cols, np.arange(low.shape[1]), row) for row in low])
    corners = np.stack([np.interp(rows, np.arange(low.shape[0]), c) for c in across.T], axis=1)
    np.testing.assert_allclose(resize_map(low, *size, mode="corners"), corners, atol=1e-5)
    # bicubic: tf.image.resize's Keys cubic (Xplique); TF reads its kernel from a table
    bicubic = tf.image.resize(batch, size, method="bicubic").numpy()[0, :, :, 0]
    np.testing.assert_allclose(resize_map(low, *size, mode="bicubic"), bicubic, atol=1e-3)


def test_the_modes_really_differ():
    low = np.random.default_rng(1).random((4, 4)).astype(np.float32)
    maps = {mode: resize_map(low, 64, 64, mode) for mode in ("bilinear", "bicubic", "corners")}
    assert np.abs(maps["bilinear"] - maps["corners"]).max() > 0.05
    assert np.abs(maps["bilinear"] - maps["bicubic"]).max() > 0.01
    r = np.corrcoef(maps["bilinear"].ravel(), maps["corners"].ravel())[0, 1]
    assert r < 0.99  # the kind of disagreement the README's table explains


def test_gradient_maps_keep_their_channels():
    gradient = np.random.default_rng(2).normal(size=(6, 8, 3)).astype(np.float32)
    for mode in ("bilinear", "bicubic", "corners"):
        assert resize_map(gradient, 12, 16, mode).shape == (12, 16, 3)


def test_upsample_option_end_to_end(tmp_path, saved_model):
    image = write_image(tmp_path / "in" / "a.png", random_rgb(45, 61, seed=3))
    raws = {}
    for mode in ("bilinear", "corners"):
        out = tmp_path / mode
        args = ["--save-raw", "-q", "--upsample", mode]
        result = invoke("gradcam", image, "-m", saved_model, "-o", out, *args)
        assert result.exit_code == 0, result.output
        summary = json.loads((out / "summary.json").read_text())
        raws[mode] = np.load(summary["results"][0]["outputs"]["raw"])
    assert raws["bilinear"].shape == raws["corners"].shape == (45, 61)
    assert np.abs(raws["bilinear"] - raws["corners"]).max() > 1e-3
    # the overlay is the same image with either map, at the input's size
    overlay = cv2.imread(str(tmp_path / "corners" / "a_gradcam.png"))
    assert overlay.shape == (45, 61, 3)
    bad = invoke("gradcam", image, "-m", saved_model, "-o", tmp_path / "x", "--upsample", "x")
    assert bad.exit_code == 2 and "unknown --upsample 'x'" in bad.stderr

"""The Python API: ``explain()`` gives what ``--save-raw`` writes, and reuses traced functions."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cnnvis_cli
from tests.conftest import invoke, random_rgb, write_image


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    write_image(root / "a.png", random_rgb(30, 44, seed=1))
    write_image(root / "b.jpg", random_rgb(50, 26, seed=2))
    return root


@pytest.mark.parametrize(("method", "options"), [("gradcam", {}), ("occlusion", {"patch": 5})])
def test_explain_equals_the_clis_raw_maps(folder, saved_model, tmp_path, method, options):
    flags = [f"--{k}={v}" for k, v in options.items()]
    out = tmp_path / "cli"
    result = invoke(method, folder, "-m", saved_model, "-o", out, "--save-raw", "-q", *flags)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    raw = {r["input"]: np.load(r["outputs"]["raw"]) for r in summary["results"]}
    paths = sorted(raw)
    results = cnnvis_cli.explain(saved_model, paths, method, **options)
    for path, got in zip(paths, results, strict=True):
        assert got.input == path and got.maps[0].shape == raw[path].shape
        np.testing.assert_allclose(got.maps[0], raw[path], atol=1e-6)
        record = next(r for r in summary["results"] if r["input"] == path)
        assert (got.targets[0], got.class_names[0]) == (record["class_index"], record["class_name"])
        assert got.scores[0] == pytest.approx(record["score"], abs=1e-5)


def test_arrays_top_k_and_reused_traces(keras_mod, cam_model):
    images = [random_rgb(16, 20, seed=s) for s in range(3)]
    first = cnnvis_cli.explain(cam_model, images, "gradcam", top_k=2, preprocess="raw")
    again = cnnvis_cli.explain(cam_model, images[:1], "gradcam", top_k=2, preprocess="raw")
    assert [len(r.maps) for r in first] == [2, 2, 2] and first[0].maps[0].shape == (16, 20)
    np.testing.assert_allclose(again[0].maps[1], first[0].maps[1], atol=1e-6)
    from cnnvis_cli.api import _methods

    [method] = [m for m in _methods.values() if m.adapter.model is cam_model]
    assert method.trace_counts() == {"compute": 1}  # the second call traced nothing new


def test_overlay_is_the_picture_the_cli_writes(folder, saved_model, tmp_path):
    import cv2

    path = str(folder / "a.png")
    [result] = cnnvis_cli.explain(saved_model, [path])
    picture = cnnvis_cli.overlay(path, result.maps[0])
    out = tmp_path / "o"
    assert invoke("gradcam", path, "-m", saved_model, "-o", out, "-q").exit_code == 0
    written = cv2.cvtColor(cv2.imread(str(out / "a_gradcam.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(picture, written)

"""The command line end to end: outputs, summary, exit codes, terminal hygiene."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import invoke, random_rgb, write_image

SIZES = [(30, 40), (64, 48), (24, 24), (17, 99)]


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    for i, (h, w) in enumerate(SIZES):
        write_image(folder / f"img_{i}.{'png' if i % 2 else 'jpg'}", random_rgb(h, w, seed=i))
    write_image(folder / "nested" / "deep.png", random_rgb(20, 30, seed=9))
    return folder


def test_folder_run_writes_overlays_at_input_size(image_folder, saved_model, tmp_path):
    out = tmp_path / "out"
    result = invoke("gradcam", image_folder, "-m", saved_model, "-o", out, "-r", "--save-raw")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["version"] == 1 and summary["method"] == "gradcam"
    assert summary["totals"]["processed"] == 5 and summary["totals"]["failed"] == 0
    assert summary["params"]["layer"] == "conv2"
    assert summary["model"]["preprocess"] == "raw"  # starts with Rescaling
    for record in summary["results"]:
        original = cv2.imread(record["input"])
        overlay = cv2.imread(record["outputs"]["overlay"])
        assert overlay.shape == original.shape
        raw = np.load(record["outputs"]["raw"])
        assert raw.dtype == np.float32 and raw.shape == original.shape[:2]
        assert raw.min() >= 0.0 and raw.max() <= 1.0
        assert record["class_name"] in {"cat", "dog", "bird"}
        assert record["error"] is None
    assert (out / "nested" / "deep_gradcam.png").is_file()
    assert not list(out.rglob("*.tmp"))


def test_corrupt_file_gives_exit_1_and_the_rest_is_written(image_folder, saved_model, tmp_path):
    (image_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    result = invoke("gradcam", image_folder, "-m", saved_model, "-o", out, "--json")
    assert result.exit_code == 1
    assert "broken.png" in result.stderr
    summary = json.loads(result.stdout)
    failed = [r for r in summary["results"] if r["error"]]
    assert [os.path.basename(r["input"]) for r in failed] == ["broken.png"]
    assert failed[0]["outputs"] == {}
    assert summary["totals"]["processed"] == 4
    assert len(list(out.glob("*_gradcam.png"))) == 4


def test_class_by_name_and_top_k(image_folder, saved_model, tmp_path):
    out = tmp_path / "out"
    result = invoke("gradcam", image_folder, "-m", saved_model, "-o", out, "-c", "dog", "-q")
    assert result.exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {r["class_name"] for r in summary["results"]} == {"dog"}
    out2 = tmp_path / "out2"
    result = invoke("gradcam", image_folder, "-m", saved_model, "-o", out2, "--top-k", "3", "-q")
    assert result.exit_code == 0
    record = json.loads((out2 / "summary.json").read_text())["results"][0]
    assert sorted(t["class_index"] for t in record["targets"]) == [0, 1, 2]
    scores = [t["score"] for t in record["targets"]]
    assert scores == sorted(scores, reverse=True)
    assert all(os.path.exists(t["outputs"]["overlay"]) for t in record["targets"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "missing.keras"], "model file not found"),
        (["--layer", "conv3"], "closest"),
        (["-c", "zebra"], "unknown class"),
        (["-c", "9"], "out of range"),
        (["--colormap", "rainbowz"], "unknown colormap"),
    ],
)
def test_setup_errors_exit_2_before_any_work(image_folder, saved_model, tmp_path, args, message):
    out = tmp_path / "out"
    model_args = [] if "-m" in args else ["-m", saved_model]
    result = invoke("gradcam", image_folder, *model_args, *args, "-o", out)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(out.glob("*.png"))


def test_not_a_model_file(tmp_path, image_folder):
    fake = tmp_path / "fake.keras"
    fake.write_bytes(b"not a zip")
    result = invoke("gradcam", image_folder, "-m", fake, "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "cannot load the model" in result.stderr


def test_empty_folder_is_a_usage_error(tmp_path, saved_model):
    (tmp_path / "empty").mkdir()
    result = invoke("gradcam", tmp_path / "empty", "-m", saved_model, "-o", tmp_path / "o")
    assert result.exit_code == 2
    assert "no images found" in result.stderr


def test_help_and_version_do_not_import_tensorflow():
    code = (
        "import sys; from cnnvis_cli.cli import app\n"
        "try:\n    app(['{arg}'])\nexcept SystemExit:\n    pass\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TF'\n"
    )
    for arg in ("--help", "--version", "gradcam --help"):
        args = arg.split()
        snippet = code.replace("['{arg}']", repr(args))
        done = subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_real_process_has_clean_terminal(image_folder, saved_model, tmp_path):
    """A subprocess run: exit 0, nothing from TensorFlow/absl/Keras on stderr."""
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cnnvis_cli",
            "gradcam",
            str(image_folder),
            "-m",
            str(saved_model),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    noise = ("oneDNN", "cuda", "absl", "WARNING", "I0000", "tensorflow", "step")
    assert not [line for line in done.stderr.splitlines() if any(n in line for n in noise)]
    assert "4 processed of 4" in done.stdout and "output folder" in done.stdout
    assert len(list(out.glob("*_gradcam.png"))) == 4

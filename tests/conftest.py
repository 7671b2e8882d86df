"""Shared fixtures: small Keras models built in code, once per session."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_images"
DEMO = REPO / "cnnvis_cli" / "data" / "shapes.keras"


@pytest.fixture(scope="session")
def keras_mod():
    from cnnvis_cli.core.tf import tf_and_keras

    _, keras = tf_and_keras()
    keras.utils.set_random_seed(0)
    return keras


def build_cam_model(keras, activation: str | None = None, size=(16, 20), classes: int = 3):
    """conv -> global average pooling -> dense: the model on which Grad-CAM equals CAM."""
    inputs = keras.Input((*size, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation=activation, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="session")
def cam_model(keras_mod):
    """conv -> GAP -> dense (linear head), with random weights."""
    keras_mod.utils.set_random_seed(1)
    return build_cam_model(keras_mod)


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory, keras_mod):
    """A small saved .keras classifier (Rescaling first, softmax head) and its class names."""
    keras_mod.utils.set_random_seed(2)
    model = keras_mod.Sequential(
        [
            keras_mod.Input((24, 24, 3)),
            keras_mod.layers.Rescaling(1 / 255),
            keras_mod.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras_mod.layers.Conv2D(8, 3, activation="relu", name="conv2"),
            keras_mod.layers.GlobalAveragePooling2D(),
            keras_mod.layers.Dense(3, activation="softmax", name="predictions"),
        ],
        name="tiny",
    )
    folder = tmp_path_factory.mktemp("model")
    path = folder / "tiny.keras"
    model.save(path)
    (folder / "tiny.classes.json").write_text('["cat", "dog", "bird"]')
    return path


def write_image(path: Path, image: np.ndarray) -> Path:
    """Encode by extension (RGB/RGBA/gray arrays) and write bytes, so any path works."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, data = cv2.imencode(path.suffix, image)
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())
    return path


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def start_slow_occlusion(tmp_path: Path, model: Path, count: int, size: int, stdout=None):
    """A real ``cnnvis occlusion`` process over ``count`` size x size images, one image and
    one-pixel strides at a time (slow enough to be signalled mid-run); returns the process, the
    output folder and the command (to run it again)."""
    import subprocess
    import sys

    folder = tmp_path / "many"
    for i in range(count):
        write_image(folder / f"{i:02d}.png", random_rgb(size, size, seed=i))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cnnvis_cli", "occlusion", str(folder), "-m", str(model)]
    command += ["-o", str(out), "-q", "-b", "1", "--stride", "1", "--patch", "3"]
    process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE)
    return process, out, command


def export_saved_model(model, path: Path) -> Path:
    """``model.export(path)`` quietly (Keras < 3.6 has no ``verbose`` argument and prints)."""
    try:
        model.export(path, verbose=False)
    except TypeError:
        model.export(path)
    return path


def invoke(*args: object):
    """Run the CLI in-process (TensorFlow is imported once per session) and return the result."""
    from typer.testing import CliRunner

    from cnnvis_cli.cli import app

    try:  # Click < 8.2 mixes stderr into stdout unless told otherwise
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def record_batches(adapter, monkeypatch) -> list[int]:
    """The batch size of every model call ``adapter`` makes from now on (a list that grows)."""
    seen: list[int] = []
    model_output = adapter.model_output

    def recording(batch):
        seen.append(int(batch.shape[0]))
        return model_output(batch)

    monkeypatch.setattr(adapter, "model_output", recording)
    return seen


def run_saving_raw(name: str, image: Path, tmp_path: Path, *extra: object):
    """``cnnvis NAME IMAGE -m DEMO --save-raw``: exit 0; the raw map and the summary."""
    import json

    out = tmp_path / "out"
    result = invoke(name, image, "-m", DEMO, "-o", out, "--save-raw", *extra)
    assert result.exit_code == 0, result.output
    raw = np.load(out / f"{image.stem}_{name}.npy")
    return raw, json.loads((out / "summary.json").read_text())


def interrupt_on_batch(monkeypatch, method_name: str, batch: int, fraction: float | None = None):
    """Make ``method_name``'s explain raise KeyboardInterrupt (Ctrl-C) on its ``batch``-th call,
    after reporting ``fraction`` of that batch as done; returns the list of batch sizes seen."""
    from cnnvis_cli.methods import get_method

    method = get_method(method_name)
    explain = method.explain
    calls: list[int] = []

    def interrupted(self, images, progress=None):
        calls.append(len(images))
        if len(calls) == batch:
            if progress is not None and fraction is not None:
                progress(fraction)
            raise KeyboardInterrupt
        return explain(self, images, progress)

    monkeypatch.setattr(method, "explain", interrupted)
    return calls

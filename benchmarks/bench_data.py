"""Benchmark inputs, generated once into ``benchmarks/_work/``: images and model files.

Nothing is downloaded: Keras applications are built with random weights (``weights="none"``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from bench_common import ROOT, WORK

SCENE_SOURCE = "cnnvis_cli.demo.scenes.make_scene"
BLOB_SOURCE = "random smooth colour field with blobs (cnnvis_cli.demo.scenes not available)"


@dataclass(frozen=True)
class ModelSpec:
    """A model under test: short key, what ``load_model`` is given, and how to save it."""

    key: str
    spec: str
    label: str


def demo_model_path() -> Path | None:
    """The bundled demo model, when it has been trained and shipped."""
    path = ROOT / "cnnvis_cli" / "data" / "shapes.keras"
    return path if path.is_file() else None


def model_specs(keys: list[str]) -> tuple[list[ModelSpec], list[str]]:
    """The requested models that exist, and notes on the ones skipped."""
    specs, notes = [], []
    for key in keys:
        if key == "demo":
            path = demo_model_path()
            if path is None:
                notes.append("demo model cnnvis_cli/data/shapes.keras is absent: skipped")
                continue
            specs.append(ModelSpec("demo", str(path), "demo (shapes.keras)"))
        elif key == "mobilenetv2":
            specs.append(ModelSpec(key, "keras:MobileNetV2", "MobileNetV2 (random weights)"))
        elif key == "resnet50":
            specs.append(ModelSpec(key, "keras:ResNet50", "ResNet50 (random weights)"))
        else:
            raise ValueError(f"unknown model {key!r}; use demo, mobilenetv2, resnet50")
    return specs, notes


def scene_source() -> str:
    try:
        from cnnvis_cli.demo.scenes import make_scene  # noqa: F401
    except ImportError:
        return BLOB_SOURCE
    return SCENE_SOURCE


def _blobs(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth random colour field with a few anti-aliased discs and mild noise (RGB uint8)."""
    grid = rng.uniform(0, 255, size=(6, 8, 3)).astype(np.float32)
    image = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    short = min(width, height)
    for _ in range(int(rng.integers(3, 8))):
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        radius = int(rng.integers(max(2, short // 20), max(3, short // 4)))
        colour = [float(c) for c in rng.uniform(0, 255, 3)]
        cv2.circle(image, centre, radius, colour, -1, cv2.LINE_AA)
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One H x W x 3 uint8 RGB test scene."""
    try:
        from cnnvis_cli.demo.scenes import make_scene
    except ImportError:
        return _blobs(rng, width, height)
    return make_scene(rng, width, height).image


def image_folder(name: str, count: int, width: int, height: int, suffix: str, seed: int) -> Path:
    """``_work/<name>/`` holding ``count`` generated images (reused when already complete)."""
    folder = WORK / name
    marker = folder / ".complete"
    if marker.is_file() and len(list(folder.glob(f"*{suffix}"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if suffix == ".jpg" else []
    for index in range(count):
        bgr = cv2.cvtColor(make_image(rng, width, height), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(folder / f"img_{index:04d}{suffix}"), bgr, params):
            raise OSError(f"cannot write images into {folder}")
    marker.write_text(scene_source() + "\n", encoding="utf-8")
    return folder


def _save(model: object, path: Path) -> Path:
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)  # type: ignore[attr-defined]
    tmp.replace(path)
    return path


def small_model() -> Path:
    """``_work/small224.keras``: a 3-conv CNN with a 224 x 224 input (fast enough for stride 1)."""
    path = WORK / "small224.keras"
    if path.is_file():
        return path
    from cnnvis_cli.core.tf import tf_and_keras

    _, keras = tf_and_keras()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((224, 224, 3), name="image")
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(5, activation="softmax")(x)
    return _save(keras.Model(inputs, outputs, name="small224"), path)


def saved_application(key: str, spec: str) -> Path:
    """``_work/<key>.keras``: a ``keras:NAME`` application with random weights, saved once."""
    path = WORK / f"{key}.keras"
    if path.is_file():
        return path
    from cnnvis_cli.core.loading import load_model

    adapter = load_model(spec, weights="none")
    return _save(adapter.model, path)

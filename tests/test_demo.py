"""The bundled demo models on sample_images/: accuracy, pointing game, check, metrics, demo."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cnnvis_cli.core.loading import load_model
from cnnvis_cli.demo.paths import DATA_DIR, demo_model_path
from cnnvis_cli.evaluation.metrics.deletion_insertion import FaithfulnessMetrics
from cnnvis_cli.methods.gradcam import GradCAM
from cnnvis_cli.output.render import resize_map
from tests.conftest import SAMPLES as REPO_SAMPLES
from tests.conftest import invoke

SAMPLES = REPO_SAMPLES
SHORTCUT_MODEL = DATA_DIR / "shapes_shortcut.keras"


@pytest.fixture(scope="module")
def demo():
    adapter = load_model(demo_model_path())
    labels = json.loads((SAMPLES / "labels.json").read_text())
    boxes = json.loads((SAMPLES / "boxes.json").read_text())
    return adapter, labels, boxes


def _model_input(adapter, name):
    image = cv2.cvtColor(cv2.imread(str(SAMPLES / name)), cv2.COLOR_BGR2RGB)
    height, width = adapter.input_size
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image, small.astype(np.float32)


def test_demo_model_classifies_the_samples(demo):
    adapter, labels, _ = demo
    assert adapter.class_names == ["circle", "square", "triangle", "cross", "star"]
    assert adapter.preprocess_mode == "raw"  # the model rescales itself
    names = sorted(labels)
    batch = np.stack([_model_input(adapter, n)[1] for n in names])
    predicted = adapter.model(batch).numpy().argmax(axis=1)
    correct = sum(
        adapter.class_names[p] == labels[n] for p, n in zip(predicted, names, strict=True)
    )
    assert correct >= len(names) - 1


def test_pointing_game_on_samples(demo):
    """The Grad-CAM maximum falls inside the object's box for >= 90 % of the samples."""
    adapter, labels, boxes = demo
    method = GradCAM.create(adapter, batch_size=len(labels))
    names = sorted(labels)
    originals, tensors = zip(*(_model_input(adapter, n) for n in names), strict=True)
    hits = 0
    for name, original, explanation in zip(
        names, originals, method.explain(np.stack(tensors)), strict=True
    ):
        heat = resize_map(explanation.maps[0], *original.shape[:2])
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        x0, y0, x1, y1 = boxes[name]
        hits += x0 <= x < x1 and y0 <= y < y1
    assert hits / len(names) >= 0.9


def test_check_passes_the_clean_model(tmp_path):
    result = invoke(
        "check",
        SAMPLES,
        "-m",
        demo_model_path(),
        "--regions",
        SAMPLES / "boxes.json",
        "-o",
        tmp_path,
        "-q",
        "--junit",
        tmp_path / "junit.xml",
    )
    assert result.exit_code == 0, result.output
    verdict = json.loads((tmp_path / "summary.json").read_text())["check"]
    assert verdict["passed"] and verdict["hit_rate"] >= 0.9 and verdict["mean_energy"] >= 0.5


def test_check_fails_the_shortcut_model(tmp_path):
    result = invoke(
        "check",
        SAMPLES,
        "-m",
        SHORTCUT_MODEL,
        "--regions",
        SAMPLES / "boxes.json",
        "-o",
        tmp_path,
        "-q",
    )
    assert result.exit_code == 3, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["check"]["passed"]
    missed = [r for r in summary["results"] if r["check"].get("hit") is False]
    assert missed and all(r["class_name"] == "circle" for r in missed)


def test_gradcam_is_more_faithful_than_a_random_map(demo):
    """Deletion/insertion AUC: Grad-CAM beats a random map on average over the samples."""
    adapter, labels, _ = demo
    metrics = FaithfulnessMetrics(adapter, steps=16, batch_size=17)
    method = GradCAM.create(adapter, batch_size=1)
    rng = np.random.default_rng(0)
    gains = []
    for name in sorted(labels):
        _, tensor = _model_input(adapter, name)
        explanation = method.explain(tensor[None])[0]
        saliency = resize_map(explanation.maps[0], *tensor.shape[:2])
        cls = explanation.targets[0]
        ours = metrics.evaluate(tensor, saliency, cls)
        random = metrics.evaluate(tensor, rng.random(saliency.shape).astype(np.float32), cls)
        gains.append(
            (random["deletion_auc"] - ours["deletion_auc"])
            + (ours["insertion_auc"] - random["insertion_auc"])
        )
    assert np.mean(gains) > 0.1


@pytest.mark.slow
def test_cnnvis_demo_writes_panels_and_report(tmp_path):
    result = invoke("demo", "-o", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    panels = sorted(tmp_path.glob("*_compare.png"))
    assert len(panels) == len(json.loads((SAMPLES / "labels.json").read_text()))
    assert (tmp_path / "index.html").is_file()
    assert "index.html" in result.stdout

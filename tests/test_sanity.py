"""`cnnvis sanity`: the randomisation (groups, initializers, a clone, restore), the test's
figures, the exit-3 gate, JUnit, outputs, and the demo model's verdicts."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.batching import Batching
from cnnvis_cli.evaluation.randomization import Randomizer, clone_adapter, layer_groups
from cnnvis_cli.evaluation.sanity import SanityTest, mean_curves, plan_steps
from tests.conftest import SAMPLES, invoke, random_rgb, write_image


def build_model(keras, seed=0):
    """conv -> BN -> ReLU -> conv -> ReLU -> GAP -> dense: two conv groups (one with its BN)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn1")  # trained-looking statistics, so re-initialising shows
    statistics = [np.full(6, v, "float32") for v in (1.5, 0.2, 0.3, 2.0)]  # gamma beta mean var
    bn.set_weights(statistics)
    return model


@pytest.fixture(scope="module")
def model(keras_mod):
    return build_model(keras_mod)


def images(count, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (count, 28, 28, 3)).astype(np.float32)


def test_groups_initializers_seeds_and_restore(model):
    adapter = ModelAdapter(model, preprocess="raw")
    trained = [w.copy() for w in model.get_weights()]
    clone = clone_adapter(adapter)
    assert clone.model is not model
    groups = layer_groups(clone)
    assert [g.name for g in groups] == ["head", "conv2", "conv1"]
    assert groups[2].paths == ["conv1", "bn1"]  # a BN goes with the kernel layer before it
    randomizer = Randomizer(groups, seed=3)
    x = images(2)
    before = clone.model(x, training=False).numpy()
    randomizer.apply([0, 1, 2])
    bn = clone.model.get_layer("bn1").get_weights()
    for values, expected in zip(bn, (1.0, 0.0, 0.0, 1.0), strict=True):  # gamma beta mean var
        np.testing.assert_array_equal(values, expected)
    kernel = clone.model.get_layer("conv1").get_weights()[0]
    limit = np.sqrt(6 / (3 * 3 * 3 + 3 * 3 * 6))  # Glorot uniform bound of conv1
    assert np.abs(kernel).max() <= limit and not np.allclose(kernel, trained[0])
    assert not np.allclose(clone.model(x, training=False).numpy(), before, atol=1e-4)
    same = Randomizer(layer_groups(clone_adapter(adapter)), seed=3)
    other = Randomizer(layer_groups(clone_adapter(adapter)), seed=4)
    same.apply([2])
    other.apply([2])
    np.testing.assert_array_equal(same.groups[2].layers[0].layer.get_weights()[0], kernel)
    assert not np.allclose(other.groups[2].layers[0].layer.get_weights()[0], kernel)
    randomizer.restore()
    np.testing.assert_allclose(clone.model(x, training=False).numpy(), before, rtol=1e-6)
    for original, now in zip(trained, model.get_weights(), strict=True):
        np.testing.assert_array_equal(original, now)  # the user's model is never touched


def test_plan_spreads_steps_from_the_head_to_the_input(model):
    groups = layer_groups(ModelAdapter(model, preprocess="raw"))
    full = plan_steps(groups, None, independent=False)
    assert [s.groups for s in full] == [(0,), (0, 1), (0, 1, 2)]
    assert [s.groups for s in plan_steps(groups, 2, independent=False)] == [(0,), (0, 1, 2)]
    assert [s.groups for s in plan_steps(groups, None, independent=True)] == [(0,), (1,), (2,)]
    assert [s.label for s in plan_steps(groups, 1, independent=True)] == ["head"]


@pytest.mark.slow
def test_test_keeps_the_class_and_the_model(model):
    adapter = ModelAdapter(model, preprocess="raw")
    trained = [w.copy() for w in model.get_weights()]
    test = SanityTest(adapter, {"gradcam": None, "saliency": None}, batching=Batching(3, 8), seed=1)
    x = images(2, seed=5)
    results = test.run(x)
    expected = model(x, training=False).numpy().argmax(axis=1)
    assert [r.class_index for r in results] == expected.tolist()
    for result in results:
        for method in ("gradcam", "saliency"):
            assert len(result.maps[method]) == 4  # trained + 3 steps
            values = result.similarity[method]
            assert all(len(v) == 3 for v in values.values())
            assert all(-1.0 <= v <= 1.0 for vs in values.values() for v in vs)
    again = test.run(x)  # the same seed and weights: the same figures
    assert again[0].similarity == results[0].similarity
    curves = mean_curves(results, ["gradcam"], 3)
    mean = np.mean([r.similarity["gradcam"]["ssim"][1] for r in results])
    assert curves["gradcam"]["mean"]["ssim"][1] == pytest.approx(mean, abs=1e-6)
    for original, now in zip(trained, model.get_weights(), strict=True):
        np.testing.assert_array_equal(original, now)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("sanity")
    for i in range(3):
        write_image(root / f"img{i}.png", random_rgb(30, 26, seed=i))
    return root


def test_gate_exit_codes_junit_and_outputs(saved_model, folder, tmp_path):
    junit = tmp_path / "sanity.xml"
    out = tmp_path / "fail"
    result = invoke(
        "sanity",
        folder,
        "-m",
        saved_model,
        "--methods",
        "gradcam,guided",
        "--steps",
        "2",
        "--max-similarity",
        "0",
        "--junit",
        junit,
        "-o",
        out,
        "--report",
        "-q",
    )
    assert result.exit_code == 3, result.output + result.stderr
    text = (out / "sanity.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    verdict = data["sanity"]["verdict"]
    assert verdict["passed"] is False and "guided" in verdict["failed"]
    assert verdict["step"] == "predictions" and verdict["images"] == 3
    guided = data["sanity"]["methods"]["guided"]["mean"]["spearman_abs"]
    assert verdict["methods"]["guided"]["similarity"] == guided[0] > 0
    assert [s["label"] for s in data["sanity"]["steps"]] == ["predictions", "conv1"]
    assert data["sanity"]["steps"][1]["layers"] == ["predictions", "conv2", "conv1"]
    assert len(data["results"]) == 3 and all(r["error"] is None for r in data["results"])
    for record in data["results"]:
        assert len(record["similarity"]["gradcam"]["hog"]) == 2
        assert (out / record["outputs"]["grid"].rsplit("/", 1)[-1]).is_file()
    assert (out / "sanity_plot.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "index.html").read_text()
    assert "sanity FAILED" in page
    # the report's table: guided's row holds its similarity per step, two decimals each
    cells = [f"<td>{v:.2f}</td>" for v in guided]
    assert "".join(cells) in page, cells
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("name") == "cnnvis sanity" and suite.get("tests") == "2"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["guided"].find("failure") is not None
    assert int(suite.get("failures")) == len(verdict["failed"])

    result = invoke(
        "sanity",
        folder,
        "-m",
        saved_model,
        "--methods",
        "gradcam",
        "--max-similarity",
        "1",
        "--steps",
        "1",
        "--json",
        "-o",
        tmp_path / "pass",
        "-q",
    )
    assert result.exit_code == 0, result.output + result.stderr
    printed = json.loads(result.stdout)
    assert printed["sanity"]["verdict"]["passed"] is True
    assert len(printed["sanity"]["steps"]) == 1


def test_usage_errors(saved_model, folder, tmp_path):
    result = invoke("sanity", folder, "-m", saved_model, "--methods", "gradcam,nope")
    assert result.exit_code == 2 and "unknown method" in result.stderr
    result = invoke("sanity", folder, "-m", saved_model, "--patch", "4", "--methods", "gradcam")
    assert result.exit_code == 2 and "--patch" in result.stderr


@pytest.mark.slow
def test_demo_model_gradcam_passes_guided_fails(tmp_path):
    from cnnvis_cli.demo.paths import demo_model_path

    result = invoke(
        "sanity",
        SAMPLES,
        "-m",
        demo_model_path(),
        "--methods",
        "gradcam,guided",
        "-o",
        tmp_path,
        "-q",
    )
    assert result.exit_code == 3
    verdict = json.loads((tmp_path / "sanity.json").read_text())["sanity"]["verdict"]
    assert verdict["methods"]["gradcam"]["passed"] is True
    assert verdict["methods"]["gradcam"]["similarity"] < 0.2
    assert verdict["methods"]["guided"]["passed"] is False
    assert verdict["methods"]["guided"]["similarity"] > 0.85

"""The --metrics registry and the metrics added to it, each against a brute-force NumPy
computation on a small model (one model call per perturbed image)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import entropy as scipy_entropy

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.evaluation.metrics import KEYS, MetricSuite, metric_names
from cnnvis_cli.evaluation.metrics.base import MetricSettings
from cnnvis_cli.evaluation.metrics.mufidelity import GRID, random_subsets
from cnnvis_cli.evaluation.metrics.road import PERCENTAGES, ROAD, impute
from tests.conftest import invoke
from tests.test_metrics import build_conv_model, raw_image


@pytest.fixture(scope="module")
def small(keras_mod):
    model = build_conv_model(keras_mod, (12, 14), seed=7)
    return model, ModelAdapter(model, preprocess="raw")


def output(model, image, class_index):
    return float(model(image[None].astype(np.float32), training=False).numpy()[0, class_index])


def test_mufidelity_matches_brute_force(small):
    model, adapter = small
    settings = MetricSettings(samples=20, batch_size=7, seed=3)
    image = raw_image((12, 14), seed=1)
    saliency = np.random.default_rng(1).random((12, 14))
    got = MetricSuite(adapter, ["mufidelity"], settings).evaluate(image, saliency, 2)
    base = output(model, image, 2)
    subsets = random_subsets(20, GRID * GRID, round(0.2 * GRID * GRID), 3)
    attributions, drops = [], []
    for subset in subsets:
        perturbed, mass = image.copy(), 0.0
        for r in range(12):
            for c in range(14):
                if (r * GRID // 12) * GRID + (c * GRID // 14) in set(subset.tolist()):
                    perturbed[r, c] = 0.0
                    mass += saliency[r, c]
        attributions.append(mass)
        drops.append(base - output(model, perturbed, 2))
    assert len(set(map(len, map(set, subsets)))) == 1  # exactly k distinct cells each
    assert got["mufidelity"] == pytest.approx(np.corrcoef(attributions, drops)[0, 1], abs=1e-5)


def test_average_drop_and_increase_match_brute_force(small):
    model, adapter = small
    image = raw_image((12, 14), seed=2)
    saliency = np.random.default_rng(2).random((12, 14)) * 3 + 1
    got = MetricSuite(adapter, ["avgdrop", "increase"]).evaluate(image, saliency, 0)
    mask = (saliency - saliency.min()) / (saliency.max() - saliency.min())
    before, after = output(model, image, 0), output(model, image * mask[:, :, None], 0)
    assert got["avgdrop"] == pytest.approx(max(0.0, before - after) / before, abs=1e-5)
    assert got["increase"] == float(after > before)
    assert set(MetricSuite(adapter, ["increase"]).evaluate(image, saliency, 0)) == {"increase"}


def test_linear_imputation_solves_the_neighbour_equations():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (9, 11, 3))
    removed = rng.random((9, 11)) < 0.6
    filled = impute(image, removed)
    np.testing.assert_array_equal(filled[~removed], image[~removed])
    weights = {(-1, -1): 1 / 12, (-1, 0): 1 / 6, (-1, 1): 1 / 12, (0, -1): 1 / 6}
    weights |= {(0, 1): 1 / 6, (1, -1): 1 / 12, (1, 0): 1 / 6, (1, 1): 1 / 12}
    for r, c in zip(*np.nonzero(removed), strict=True):  # each is its neighbours' weighted mean
        total, acc = 0.0, np.zeros(3)
        for (dr, dc), w in weights.items():
            if 0 <= r + dr < 9 and 0 <= c + dc < 11:
                total += w
                acc += w * filled[r + dr, c + dc]
        np.testing.assert_allclose(filled[r, c], acc / total, rtol=1e-9, atol=1e-9)
    noisy = impute(image, removed, noise=2.55, rng=np.random.default_rng(1))
    assert 1.5 < np.std(noisy[removed] - filled[removed]) < 3.5


def test_road_matches_brute_force(small):
    model, adapter = small
    image = raw_image((12, 14), seed=4)
    saliency = np.random.default_rng(4).integers(0, 6, (12, 14)).astype(float)  # ties
    metric = ROAD(adapter, MetricSettings(batch_size=5))
    metric.noise = 0.0
    got = metric.evaluate(image, saliency, 1)
    order = np.argsort(-saliency.ravel(), kind="stable")  # most relevant first, ties by index
    base = output(model, image, 1)
    morf, lerf = [], []
    for p in PERCENTAGES:
        k = int(np.floor(p * order.size / 100 + 0.5))
        top = np.zeros(order.size, bool)
        top[order[:k]] = True
        bottom = np.zeros(order.size, bool)
        bottom[order[order.size - k :]] = True
        morf.append(output(model, impute(image, top.reshape(12, 14)), 1) - base)
        lerf.append(output(model, impute(image, bottom.reshape(12, 14)), 1) - base)
    assert got["road_morf"] == pytest.approx(np.mean(morf), abs=1e-5)
    assert got["road_lerf"] == pytest.approx(np.mean(lerf), abs=1e-5)
    assert got["road"] == pytest.approx((np.mean(lerf) - np.mean(morf)) / 2, abs=1e-5)
    seeded = ROAD(adapter, MetricSettings(seed=9))
    assert seeded.evaluate(image, saliency, 1) == seeded.evaluate(image, saliency, 1)


def test_sparseness_and_complexity(small):
    _, adapter = small
    image = raw_image((12, 14))
    saliency = np.random.default_rng(5).random((12, 14))
    got = MetricSuite(adapter, ["sparseness", "complexity"]).evaluate(image, saliency, 0)
    a = np.sort(saliency.ravel() + 1e-7)
    n = a.size
    gini = sum((2 * (i + 1) - n - 1) * a[i] for i in range(n)) / (n * a.sum())
    assert got["sparseness"] == pytest.approx(gini, rel=1e-9)
    assert got["complexity"] == pytest.approx(scipy_entropy(saliency.ravel()), rel=1e-9)
    one_hot = np.zeros((12, 14))
    one_hot[3, 4] = 1.0
    peaked = MetricSuite(adapter, ["sparseness", "complexity"]).evaluate(image, one_hot, 0)
    assert peaked["complexity"] == 0.0 and peaked["sparseness"] > 0.99


def test_registry_and_cli(saved_model, tmp_path):
    assert set(metric_names()) == {
        "deletion",
        "insertion",
        "mufidelity",
        "road",
        "avgdrop",
        "increase",
        "sparseness",
        "complexity",
    }
    with pytest.raises(ValueError, match="unknown metric"):
        MetricSuite(None, ["deletion", "pointing"])
    from tests.conftest import random_rgb, write_image

    write_image(tmp_path / "in" / "a.png", random_rgb(30, 30, seed=1))
    out = tmp_path / "out"
    result = invoke(
        "gradcam",
        tmp_path / "in",
        "-m",
        saved_model,
        "--metrics",
        ",".join(metric_names()),
        "--metric-samples",
        "16",
        "--metric-steps",
        "8",
        "-o",
        out,
        "-q",
        "--report",
    )
    assert result.exit_code == 0, result.output + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    keys = set(summary["results"][0]["metrics"])
    assert keys == set(KEYS) == set(summary["totals"]["metrics"])
    assert "ROAD MoRF" in (out / "index.html").read_text()
    result = invoke("gradcam", tmp_path / "in", "-m", saved_model, "--metrics", "roads")
    assert result.exit_code == 2 and "mufidelity" in result.stderr

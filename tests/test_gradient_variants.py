"""Gradient x input, VarGrad, SquareGrad, DeconvNet and GradientSHAP against plain GradientTape
or NumPy references, computed one image and one sample at a time."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.decode import to_model_tensor
from cnnvis_cli.methods.deconvnet import DeconvNet
from cnnvis_cli.methods.gradient_input import GradientInput
from cnnvis_cli.methods.gradient_shap import GradientShap
from cnnvis_cli.methods.guided import GuidedBackprop
from cnnvis_cli.methods.smoothgrad import SmoothGrad
from cnnvis_cli.methods.vargrad import SquareGrad, VarGrad
from tests.conftest import SAMPLES, run_saving_raw, write_image
from tests.test_gradient_methods import _normalise
from tests.test_gradient_methods import logit_gradients as tape_gradient
from tests.test_guided import (
    assert_close,
    build_conv_net,
    build_relu6_net,
    conv_net_ops,
    reference,
    relu6_net_ops,
)

SIZE = (12, 14)


def stacked(explanations, k: int = 0) -> np.ndarray:
    return np.stack([e.maps[k] for e in explanations])


@pytest.fixture(scope="module")
def plain_model(keras_mod):
    """conv (tanh) -> conv (softplus) -> GAP -> dense; no rescaling layer, linear head."""
    keras_mod.utils.set_random_seed(8)
    return keras_mod.Sequential(
        [
            keras_mod.Input((*SIZE, 3)),
            keras_mod.layers.Conv2D(8, 3, padding="same", activation="tanh", name="conv"),
            keras_mod.layers.Conv2D(8, 3, padding="same", activation="softplus", name="conv2"),
            keras_mod.layers.GlobalAveragePooling2D(),
            keras_mod.layers.Dense(3, name="head"),
        ]
    )


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(4).uniform(0, 255, (3, *SIZE, 3)).astype(np.float32)


# -- gradient x input ---------------------------------------------------------------------------


@pytest.mark.parametrize("preprocess", ["symmetric", "caffe"])
def test_gradient_input_is_model_input_times_its_gradient(plain_model, images, preprocess):
    adapter = ModelAdapter(plain_model, preprocess=preprocess)
    explanations = GradientInput.create(adapter, top_k=2, batch_size=3).explain(images)
    if preprocess == "symmetric":
        inputs = images / 127.5 - 1.0
    else:  # RGB -> BGR, minus the ImageNet BGR means
        inputs = images[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    order = np.argsort(-plain_model(inputs).numpy(), axis=1)[:, :2]
    for k in range(2):
        attributions = inputs * tape_gradient(plain_model, inputs, order[:, k])
        expected = _normalise(np.abs(attributions).sum(axis=-1))
        assert [e.targets[k] for e in explanations] == list(order[:, k])
        np.testing.assert_allclose(stacked(explanations, k), expected, atol=1e-5)
    # not the raw-pixel product x * dy/dx (anchored at black, not at the model's zero)
    raw_product = images * tape_gradient(plain_model, inputs, order[:, 0])
    assert np.abs(stacked(explanations) - _normalise(np.abs(raw_product).sum(-1))).max() > 0.05


# -- VarGrad and SquareGrad ---------------------------------------------------------------------


def noisy_gradients(model, image, cls, samples, noise, seed) -> np.ndarray:
    """(samples, h, w, c): one noisy copy at a time, noise from the documented stateless seeds."""
    import tensorflow as tf

    out = []
    for s in range(samples):
        eps = tf.random.stateless_normal(image.shape, seed=[seed, s], alg="philox").numpy()
        noisy = image + eps * np.float32(255.0 * noise)
        out.append(tape_gradient(model, noisy[None], np.array([cls]))[0])
    return np.stack(out)


@pytest.mark.parametrize(
    ("cls", "statistic"),
    [
        (VarGrad, lambda g: g.var(axis=0, ddof=1)),
        (SquareGrad, lambda g: (g**2).mean(axis=0)),
        (SmoothGrad, lambda g: np.abs(g.mean(axis=0))),
    ],
    ids=["vargrad", "squaregrad", "smoothgrad"],
)
def test_noise_statistics_match_per_sample_loop(plain_model, images, cls, statistic):
    adapter = ModelAdapter(plain_model, preprocess="raw")
    method = cls.create(adapter, samples=5, noise=0.1, seed=3, eval_batch=4)
    fractions: list[float] = []
    explanations = method.explain(images[:2], fractions.append)
    assert fractions == pytest.approx([1 / 3, 2 / 3, 1.0])  # 10 copies in chunks of 4
    classes = plain_model(images[:2]).numpy().argmax(axis=1)
    for b in range(2):
        g = noisy_gradients(plain_model, images[b], classes[b], 5, 0.1, 3)
        expected = _normalise(statistic(g).max(axis=-1))
        assert explanations[b].targets == [classes[b]]
        np.testing.assert_allclose(explanations[b].maps[0], expected, atol=1e-5)
    # batching does not matter; the seed does
    alone = cls.create(adapter, samples=5, noise=0.1, seed=3, eval_batch=3).explain(images[1:2])
    np.testing.assert_allclose(alone[0].maps[0], explanations[1].maps[0], atol=1e-5)
    again = cls.create(adapter, samples=5, noise=0.1, seed=3, eval_batch=7).explain(images[:2])
    np.testing.assert_array_equal(stacked(again), stacked(explanations))
    other = cls.create(adapter, samples=5, noise=0.1, seed=4, eval_batch=4).explain(images[1:2])
    assert np.abs(other[0].maps[0] - explanations[1].maps[0]).max() > 1e-3


def test_vargrad_needs_two_samples(plain_model):
    adapter = ModelAdapter(plain_model, preprocess="raw")
    with pytest.raises(ValueError, match="--samples"):
        VarGrad.create(adapter, samples=1)
    assert SquareGrad.create(adapter, samples=1).options.samples == 1


# -- DeconvNet ----------------------------------------------------------------------------------


@pytest.mark.parametrize("net", ["conv", "relu6"])
def test_deconvnet_matches_numpy_reference(keras_mod, net):
    if net == "conv":
        model, ops = build_conv_net(keras_mod), conv_net_ops
        images = np.random.default_rng(1).uniform(0, 1, (4, 6, 7, 3)).astype(np.float32)
    else:
        model, ops = build_relu6_net(keras_mod), relu6_net_ops
        images = np.random.default_rng(2).uniform(0, 4, (4, 3, 3, 1)).astype(np.float32)
    adapter = ModelAdapter(model, preprocess="raw")
    activations = [getattr(lay, "activation", None) for lay in model.layers]
    explanations = DeconvNet.create(adapter, top_k=2, batch_size=4).explain(images)
    order = np.argsort(-model(images).numpy(), axis=1)[:, :2]
    for k in range(2):
        classes = order[:, k]
        expected, _, _ = reference(ops(model), images, classes, deconvnet=True)
        got = stacked(explanations, k)
        assert got.shape == images.shape and explanations[0].kind == "gradient"
        assert_close(got, expected)
    guided = stacked(GuidedBackprop.create(adapter, batch_size=4).explain(images))
    assert not np.allclose(stacked(explanations), guided, atol=1e-4 * np.abs(guided).max())
    restored = [getattr(lay, "activation", None) for lay in model.layers]
    assert all(a is b for a, b in zip(activations, restored, strict=True))


# -- GradientSHAP -------------------------------------------------------------------------------


def shap_reference(model, image, cls, baselines, samples, noise, seed):
    """Captum's recipe, one draw at a time: alpha and the baseline item from NumPy keyed by
    (seed, s, 2), the uniform image by (seed, s, 1), the noise by TF's stateless (seed, s)."""
    import tensorflow as tf

    total = np.zeros(image.shape)
    deltas = []
    for s in range(samples):
        rng = np.random.default_rng([seed, s, 2])
        alpha, item = rng.uniform(), rng.integers(len(baselines))
        base = baselines[item]
        if base is None:
            base = np.random.default_rng([seed, s, 1]).uniform(0, 255, image.shape)
            base = base.astype(np.float32)
        eps = tf.random.stateless_normal(image.shape, seed=[seed, s], alg="philox").numpy()
        noisy = image + eps * np.float32(255.0 * noise)
        point = (base + np.float32(alpha) * (noisy - base)).astype(np.float32)
        gradient = tape_gradient(model, point[None], np.array([cls]))[0]
        total += (noisy - base).astype(np.float64) * gradient
        logits = model(np.stack([noisy, base]).astype(np.float32)).numpy()
        deltas.append(logits[0, cls] - logits[1, cls])
    return total / samples, float(np.mean(deltas))


def test_gradient_shap_matches_per_draw_loop(plain_model, images):
    adapter = ModelAdapter(plain_model, preprocess="raw")
    method = GradientShap.create(
        adapter, samples=6, noise=0.05, seed=2, baseline="black,uniform", eval_batch=4
    )
    phi, delta, chosen = method.attribute(images[:2])
    explanations = method.explain(images[:2])
    for b in range(2):
        cls = chosen["targets"][b, 0]
        expected, expected_delta = shap_reference(
            plain_model, images[b], cls, [np.zeros_like(images[b]), None], 6, 0.05, 2
        )
        scale = np.abs(expected).max()
        np.testing.assert_allclose(phi[b, 0] / scale, expected / scale, atol=1e-5)
        np.testing.assert_allclose(delta[b, 0], expected_delta, rtol=1e-4)
        np.testing.assert_allclose(
            explanations[b].maps[0], _normalise(np.abs(expected).sum(-1)), atol=1e-5
        )
        gap = abs(expected.sum() - expected_delta) / abs(expected_delta)
        assert explanations[b].facts.completeness_gap[0] == pytest.approx(gap, rel=1e-3)
    # batching does not matter; the seed does
    alone = GradientShap.create(
        adapter, samples=6, noise=0.05, seed=2, baseline="black,uniform", eval_batch=5
    ).explain(images[1:2])
    np.testing.assert_allclose(alone[0].maps[0], explanations[1].maps[0], atol=1e-5)
    other = GradientShap.create(
        adapter, samples=6, noise=0.05, seed=3, baseline="black,uniform"
    ).explain(images[1:2])
    assert np.abs(other[0].maps[0] - explanations[1].maps[0]).max() > 1e-3


def test_gradient_shap_folder_of_baselines(plain_model, images, tmp_path):
    folder = tmp_path / "baselines"
    rng = np.random.default_rng(9)
    pictures = [rng.integers(0, 256, (30, 25, 3), dtype=np.uint8) for _ in range(2)]
    for i, picture in enumerate(pictures):
        write_image(folder / f"b{i}.png", picture)
    adapter = ModelAdapter(plain_model, preprocess="raw")
    method = GradientShap.create(adapter, samples=4, seed=1, baseline=str(folder))
    phi, _, chosen = method.attribute(images[:1])
    bases = [to_model_tensor(p, SIZE, 3) for p in pictures]
    expected, _ = shap_reference(plain_model, images[0], chosen["targets"][0, 0], bases, 4, 0, 1)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(phi[0, 0] / scale, expected / scale, atol=1e-5)
    with pytest.raises(ValueError, match="baseline"):
        GradientShap.create(adapter, baseline="purple")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        GradientShap.create(adapter, baseline=str(empty)).explain(images[:1])


def test_gradient_shap_is_complete_for_a_linear_model(keras_mod, images):
    """For a model linear in its input, (x - b) * grad sums to F(x) - F(b) for every draw."""
    keras_mod.utils.set_random_seed(3)
    linear = keras_mod.Sequential(
        [keras_mod.Input((*SIZE, 3)), keras_mod.layers.Flatten(), keras_mod.layers.Dense(3)]
    )
    adapter = ModelAdapter(linear, preprocess="unit")
    explanations = GradientShap.create(adapter, samples=3, noise=0.1, top_k=2).explain(images)
    gaps = [g for e in explanations for g in e.facts.completeness_gap]
    assert len(gaps) == 6 and max(gaps) < 1e-3


# -- the command line ---------------------------------------------------------------------------

GRADIENT_COMMANDS = {
    "gradient-input": [],
    "vargrad": ["--samples", "4"],
    "squaregrad": ["--samples", "4"],
    "deconvnet": [],
    "gradient-shap": ["--samples", "4", "--noise", "0.05", "--baseline", "black,blur"],
}


@pytest.mark.parametrize("name", list(GRADIENT_COMMANDS))
def test_cli_end_to_end_on_the_demo_model(tmp_path, name):
    image = SAMPLES / "scene_02.jpg"
    raw, summary = run_saving_raw(name, image, tmp_path, *GRADIENT_COMMANDS[name])
    assert raw.shape[:2] == cv2.imread(str(image)).shape[:2]  # deconvnet: h x w x 3
    if name == "gradient-shap":
        assert "completeness_gap" in str(summary["results"][0])

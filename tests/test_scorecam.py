"""Score-CAM against a naive one-channel-at-a-time reference, and its streaming guarantees."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.methods.scorecam import ScoreCAM
from tests.conftest import record_batches

SIZE = (18, 26)  # non-square
# the reference calls the functional models on bare tensors
pytestmark = pytest.mark.filterwarnings("ignore:The structure of `inputs`:UserWarning")


def build_model(keras, channels: int, size=SIZE, classes: int = 4, seed: int = 0):
    """conv -> max-pool -> conv "feat" (K channels, half resolution) -> GAP -> dense softmax."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*size, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="feat")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(classes, kernel_initializer=keras.initializers.RandomNormal(0, 2))(
        x
    )
    outputs = keras.layers.Softmax()(logits)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def models(keras_mod):
    return {k: build_model(keras_mod, k, seed=k) for k in (8, 64)}


def raw_images(count: int, size=SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, *size, 3)).astype(np.float32)


def softmax(values: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def probe_of(model, layer: str = "feat"):
    """model input -> (the layer's features, the logits: the Dense before the Softmax layer)."""
    import tensorflow as tf

    return tf.keras.Model(model.inputs, [model.get_layer(layer).output, model.layers[-2].output])


def reference(
    model,
    image,
    *,
    top_k=1,
    class_index=None,
    channels=None,
    scale=255.0,
    weights="paper",
    mask_space="model",
    probe=None,
):
    """Brute-force Score-CAM, one masked input per channel, in NumPy and OpenCV.

    paper (Wang et al.'s reference code): a_k = the target's softmax probability on
    X * H_k, X the preprocessed input; logit-softmax (pytorch-grad-cam): a_k = softmax over
    channels of the target's logit. H_k = minmax(up(A_k)), upsampled with OpenCV's bilinear
    (half-pixel centres).
    """
    probe = probe or probe_of(model)
    model_input = image / scale
    features, base_logits = (t.numpy()[0] for t in probe(model_input[None]))
    base = softmax(base_logits.astype(np.float64))
    targets = [class_index] if class_index is not None else list(np.argsort(-base)[:top_k])
    channels = range(features.shape[-1]) if channels is None else channels
    height, width = image.shape[:2]
    inputs, used = [], []
    for k in channels:
        up = cv2.resize(features[:, :, k].astype(np.float32), (width, height)).astype(np.float64)
        spread = up.max() - up.min()
        mask = (up - up.min()) / spread if spread > 0 else np.zeros_like(up)
        if mask_space == "model":
            masked = model_input * mask[:, :, None]
        else:
            masked = image * mask[:, :, None] / scale
        inputs.append(masked.astype(np.float32))
        used.append(features[:, :, k])
    scores = []
    for start in range(0, len(inputs), 32):  # one masked input per row: rows are independent
        logits = probe(np.stack(inputs[start : start + 32]))[1].numpy().astype(np.float64)
        for row in logits:
            per_class = softmax(row) if weights == "paper" else row
            scores.append([per_class[c] for c in targets])
    scores, used = np.asarray(scores, np.float64), np.stack(used).astype(np.float64)
    maps = []
    for t in range(len(targets)):
        alpha = scores[:, t] if weights == "paper" else softmax(scores[:, t])
        cam = np.maximum(np.tensordot(alpha, used, axes=1), 0)
        maps.append((cam - cam.min()) / (cam.max() - cam.min() + 1e-8))
    return np.stack(maps), targets, scores


@pytest.mark.parametrize("weights", ["paper", "logit-softmax"])
@pytest.mark.parametrize("mask_space", ["model", "raw"])
@pytest.mark.parametrize(("channels", "eval_batch", "top_k"), [(8, 3, 2), (64, 10, 1)])
def test_matches_brute_force_reference(models, channels, eval_batch, top_k, weights, mask_space):
    model = models[channels]
    images = raw_images(3, seed=channels)
    method = ScoreCAM.create(
        ModelAdapter(model, preprocess="unit"),
        layer="feat",
        top_k=top_k,
        eval_batch=eval_batch,
        channel_weights=weights,
        mask_space=mask_space,
    )
    assert channels % eval_batch != 0  # the last chunk is padded
    fractions = []
    explanations = method.explain(images, fractions.append)
    assert len(explanations) == 3
    for b, image in enumerate(images):
        expected, targets, scores = reference(
            model, image, top_k=top_k, weights=weights, mask_space=mask_space
        )
        assert explanations[b].targets == [int(c) for c in targets]
        assert np.ptp(scores[:, 0]) > 1e-3  # the channel weights are not all equal
        assert explanations[b].facts.channels == list(range(channels))
        for k in range(top_k):
            got = explanations[b].maps[k]
            assert got.shape == (9, 13) and got.dtype == np.float32
            assert got.max() > 0.99
            np.testing.assert_allclose(got, expected[k], atol=1e-4)
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    params = method.params()
    assert (params["layer"], params["channels"], params["channel_weights"]) == (
        "feat",
        channels,
        weights,
    )


def test_fixed_class_and_raw_preprocessing(models):
    model = models[8]
    image = raw_images(1, seed=3)
    # preprocess="raw": the model sees raw pixels, so the reference must not rescale either
    method = ScoreCAM.create(ModelAdapter(model, preprocess="raw"), class_index=2, eval_batch=5)
    explanation = method.explain(image)[0]
    expected, _, _ = reference(model, image[0], class_index=2, scale=1.0)
    assert explanation.targets == [2]
    np.testing.assert_allclose(explanation.maps[0], expected[0], atol=1e-4)
    assert explanation.outputs[0] == pytest.approx(float(model(image).numpy()[0, 2]), abs=1e-6)


def test_max_channels_matches_restricted_reference(models):
    model = models[64]
    images = raw_images(2, seed=11)
    adapter = ModelAdapter(model, preprocess="unit")
    method = ScoreCAM.create(adapter, max_channels=5, top_k=2, eval_batch=4)
    assert method.params()["max_channels"] == 5 and method.params()["channels"] == 64
    explanations = method.explain(images)
    full = ScoreCAM.create(adapter, top_k=2, eval_batch=16).explain(images)
    import tensorflow as tf

    feature_model = tf.keras.Model(model.inputs, model.get_layer("feat").output)
    for b, image in enumerate(images):
        chosen = explanations[b].facts.channels
        variance = feature_model(image[None] / 255.0).numpy()[0].var(axis=(0, 1))
        assert len(chosen) == len(set(chosen)) == 5
        assert variance[chosen].min() >= np.sort(variance)[-5] - 1e-6  # the 5 largest
        expected, _, _ = reference(model, image, top_k=2, channels=chosen)
        assert np.abs(expected - np.stack(full[b].maps)).max() > 1e-3  # restriction matters
        for k in range(2):
            np.testing.assert_allclose(explanations[b].maps[k], expected[k], atol=1e-4)


@pytest.mark.parametrize("channels", [8, 64])
def test_model_sees_at_most_eval_batch_masked_inputs(models, channels, monkeypatch):
    """Masked inputs go through the model --eval-batch at a time, whatever K is; traced once."""
    adapter = ModelAdapter(models[channels], preprocess="unit")
    seen = record_batches(adapter, monkeypatch)
    method = ScoreCAM.create(adapter, eval_batch=6)
    fractions: list[float] = []
    for seed, count in enumerate((6, 2, 5, 6)):  # full and short batches
        method.explain(raw_images(count, seed=seed), fractions.append)
    assert max(seen) <= 16  # the feature pass sees one step of images (16), masks <= 6
    assert sorted(set(seen)) == [6, 16]
    assert set(method.trace_counts().values()) == {1}


def test_rejects_bad_options(models):
    adapter = ModelAdapter(models[8], preprocess="unit")
    with pytest.raises(ValueError, match="max-channels"):
        ScoreCAM.create(adapter, max_channels=0)
    with pytest.raises(ValueError, match="channel-weights"):
        ScoreCAM.create(adapter, channel_weights="softmax")
    with pytest.raises(ValueError, match="mask-space"):
        ScoreCAM.create(adapter, mask_space="pixels")
    more = ScoreCAM.create(adapter, max_channels=100, eval_batch=8)  # more than K: all channels
    assert more.explain(raw_images(1))[0].facts.channels == list(range(8))


@pytest.mark.slow
def test_matches_the_paper_on_a_real_backbone(keras_mod):
    """MobileNetV2 (random weights) nested in a Sequential, an inner layer: r >= 0.99."""
    keras_mod.utils.set_random_seed(7)
    base = keras_mod.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(48, 48, 3), alpha=0.35
    )
    inputs = keras_mod.Input((48, 48, 3))
    x = keras_mod.layers.GlobalAveragePooling2D()(base(inputs))
    logits = keras_mod.layers.Dense(
        5, kernel_initializer=keras_mod.initializers.RandomNormal(0, 0.5)
    )(x)
    model = keras_mod.Model(inputs, keras_mod.layers.Softmax()(logits))
    image = raw_images(1, (48, 48), seed=2)
    layer = "block_6_expand_relu"  # 3 x 3 x 96 at this size
    adapter = ModelAdapter(model, preprocess="unit")
    got = ScoreCAM.create(adapter, layer=f"{base.name}/{layer}").explain(image)[0].maps[0]
    features = keras_mod.Model(base.inputs, base.get_layer(layer).output)
    probe = keras_mod.Model(inputs, [features(inputs), logits])
    expected, _, _ = reference(model, image[0], probe=probe)
    r = np.corrcoef(got.ravel(), expected[0].ravel())[0, 1]
    assert r >= 0.99

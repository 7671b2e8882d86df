"""Score-CAM against a naive one-channel-at-a-time reference, and its streaming guarantees."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnvis_cli.methods.scorecam import ScoreCAM
from cnnvis_cli.model import ModelAdapter

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


def reference(model, image, top_k=1, class_index=None, channels=None, scale=255.0):
    """Normalised Score-CAM maps (T, h, w) and targets, scoring one masked image at a time."""
    import tensorflow as tf

    feature_model = tf.keras.Model(model.inputs, [model.get_layer("feat").output, model.outputs[0]])
    features, base = (t.numpy()[0] for t in feature_model(image[None] / scale))
    targets = [class_index] if class_index is not None else list(np.argsort(-base)[:top_k])
    channels = range(features.shape[-1]) if channels is None else channels
    scores, used = [], []
    for k in channels:
        up = tf.image.resize(features[None, :, :, k, None], image.shape[:2], method="bilinear")
        up = up.numpy()[0, :, :, 0].astype(np.float64)
        spread = up.max() - up.min()
        mask = (up - up.min()) / spread if spread > 0 else np.zeros_like(up)
        masked = (image * mask[:, :, None]).astype(np.float32)
        out = model(masked[None] / scale).numpy()[0]
        scores.append([out[c] for c in targets])
        used.append(features[:, :, k])
    scores, used = np.asarray(scores, np.float64), np.stack(used).astype(np.float64)
    maps = []
    for t in range(len(targets)):
        weights = np.exp(scores[:, t] - scores[:, t].max())
        weights /= weights.sum()
        cam = np.maximum(np.tensordot(weights, used, axes=1), 0)
        maps.append((cam - cam.min()) / (cam.max() - cam.min() + 1e-8))
    return np.stack(maps), targets, scores


@pytest.mark.parametrize(("channels", "batch_size", "top_k"), [(8, 3, 2), (64, 10, 1)])
def test_matches_naive_reference(models, channels, batch_size, top_k):
    model = models[channels]
    images = raw_images(3, seed=channels)
    method = ScoreCAM(
        ModelAdapter(model, preprocess="unit"), layer="feat", top_k=top_k, batch_size=batch_size
    )
    assert channels % batch_size != 0  # the last chunk is padded
    fractions = []
    explanations = method.explain(images, fractions.append)
    assert len(explanations) == 3
    for b, image in enumerate(images):
        expected, targets, scores = reference(model, image, top_k=top_k)
        assert explanations[b].class_indices == [int(c) for c in targets]
        assert np.ptp(scores[:, 0]) > 1e-3  # the channel weights are not all equal
        assert explanations[b].extras["channels"] == list(range(channels))
        for k in range(top_k):
            got = explanations[b].maps[k]
            assert got.shape == (9, 13) and got.dtype == np.float32
            assert got.max() > 0.99
            np.testing.assert_allclose(got, expected[k], atol=1e-5)
    chunks = math.ceil(3 * channels / batch_size)
    assert len(fractions) == chunks
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert method.params() == {
        "class_index": None,
        "top_k": top_k,
        "layer": "feat",
        "max_channels": None,
        "channels": channels,
    }


def test_fixed_class_and_raw_preprocessing(models):
    model = models[8]
    image = raw_images(1, seed=3)
    # preprocess="raw": the model sees raw pixels, so the reference must not rescale either
    method = ScoreCAM(ModelAdapter(model, preprocess="raw"), class_index=2, batch_size=5)
    explanation = method.explain(image)[0]
    expected, _, _ = reference(model, image[0], class_index=2, scale=1.0)
    assert explanation.class_indices == [2]
    np.testing.assert_allclose(explanation.maps[0], expected[0], atol=1e-5)
    assert explanation.scores[0] == pytest.approx(float(model(image).numpy()[0, 2]), abs=1e-6)


def test_max_channels_matches_restricted_reference(models):
    model = models[64]
    images = raw_images(2, seed=11)
    method = ScoreCAM(ModelAdapter(model, preprocess="unit"), max_channels=5, top_k=2, batch_size=4)
    assert method.params()["max_channels"] == 5 and method.params()["channels"] == 64
    explanations = method.explain(images)
    full = ScoreCAM(ModelAdapter(model, preprocess="unit"), top_k=2, batch_size=16).explain(images)
    import tensorflow as tf

    feature_model = tf.keras.Model(model.inputs, model.get_layer("feat").output)
    for b, image in enumerate(images):
        chosen = explanations[b].extras["channels"]
        variance = feature_model(image[None] / 255.0).numpy()[0].var(axis=(0, 1))
        assert len(chosen) == len(set(chosen)) == 5
        assert variance[chosen].min() >= np.sort(variance)[-5] - 1e-6  # the 5 largest
        expected, _, _ = reference(model, image, top_k=2, channels=chosen)
        assert np.abs(expected - np.stack(full[b].maps)).max() > 1e-3  # restriction matters
        for k in range(2):
            np.testing.assert_allclose(explanations[b].maps[k], expected[k], atol=1e-5)


@pytest.mark.parametrize("channels", [8, 64])
def test_chunks_are_bounded_and_traced_once(models, channels):
    """Masked inputs go through the model batch_size at a time, whatever K is."""
    method = ScoreCAM(ModelAdapter(models[channels], preprocess="unit"), batch_size=6)
    compiled = method._masked
    shapes = []

    def recording(images, features, targets, pairs):
        shapes.append((tuple(images.shape), tuple(pairs.shape)))
        return compiled(images, features, targets, pairs)

    method._masked = recording
    for seed, count in enumerate((6, 2, 5, 6)):  # full and short batches
        method.explain(raw_images(count, seed=seed))
    expected_calls = sum(math.ceil(n * channels / 6) for n in (6, 2, 5, 6))
    assert len(shapes) == expected_calls
    assert set(shapes) == {((6, *SIZE, 3), (6, 2))}  # padded batch, 6 pairs per call
    assert compiled.experimental_get_tracing_count() == 1
    assert method._features.experimental_get_tracing_count() == 1
    assert method._combine.experimental_get_tracing_count() == 1


def test_rejects_bad_options(models):
    adapter = ModelAdapter(models[8], preprocess="unit")
    with pytest.raises(ValueError, match="max-channels"):
        ScoreCAM(adapter, max_channels=0)
    more = ScoreCAM(adapter, max_channels=100, batch_size=8)  # more than K: all channels
    assert more.explain(raw_images(1))[0].extras["channels"] == list(range(8))

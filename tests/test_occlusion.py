"""Occlusion sensitivity against a naive one-position-at-a-time NumPy reference."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.methods.occlusion import Occlusion, default_patch

SIZES = ((20, 20), (18, 26), (16, 16))


def build_conv_model(keras, size, classes: int = 3, seed: int = 0):
    """conv -> max-pool -> flatten -> dense softmax: position-dependent, so drops vary."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*size, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    logits = keras.layers.Dense(
        classes, kernel_initializer=keras.initializers.RandomNormal(0, 0.1)
    )(x)
    outputs = keras.layers.Softmax()(logits)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def models(keras_mod):
    return {size: build_conv_model(keras_mod, size, seed=i) for i, size in enumerate(SIZES)}


@pytest.fixture(scope="module")
def dynamic_model(keras_mod):
    keras_mod.utils.set_random_seed(7)
    inputs = keras_mod.Input((None, None, 3))
    x = keras_mod.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = keras_mod.layers.GlobalMaxPooling2D()(x)
    outputs = keras_mod.layers.Dense(3, activation="softmax")(x)
    return keras_mod.Model(inputs, outputs)


def raw_images(count: int, size, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, *size, 3)).astype(np.float32)


def corners(size: int, patch: int, stride: int) -> list[int]:
    found = list(range(0, size - patch + 1, stride))
    return found if found[-1] == size - patch else [*found, size - patch]


def reference(
    model, image, patch, stride, baseline, top_k=1, class_index=None, scale=255.0, preprocess=None
):
    """Averaged drop maps (K, h, w), occluding one position at a time in plain Python; each
    occluded copy is preprocessed on its own (``preprocess``, else division by ``scale``)."""
    h, w = image.shape[:2]
    if preprocess is None:

        def preprocess(x):
            return x / scale

    base = model(preprocess(image[None])).numpy()[0]
    targets = [class_index] if class_index is not None else list(np.argsort(-base)[:top_k])
    sums = np.zeros((len(targets), h, w))
    counts = np.zeros((h, w))
    for y in corners(h, patch, stride):
        for x in corners(w, patch, stride):
            occluded = image.copy()
            occluded[y : y + patch, x : x + patch] = baseline[y : y + patch, x : x + patch]
            out = model(preprocess(occluded[None])).numpy()[0]
            for k, c in enumerate(targets):
                sums[k, y : y + patch, x : x + patch] += base[c] - out[c]
            counts[y : y + patch, x : x + patch] += 1
    return sums / counts, targets


def baseline_for(image, kind, patch):
    if kind == "mean":
        return np.broadcast_to(image.mean(axis=(0, 1)), image.shape)
    if kind == "zero":
        return np.zeros_like(image)
    if kind == "blur":
        return cv2.GaussianBlur(image, (0, 0), sigmaX=patch / 2)
    return np.full_like(image, float(kind))


@pytest.mark.parametrize(
    ("size", "patch", "stride", "batch_size", "baseline", "top_k"),
    [
        ((16, 16), 4, 4, 16, "mean", 1),  # stride divides, batch size divides positions
        ((20, 20), 6, 4, 7, "zero", 1),  # stride does not divide: border row/column added
        ((18, 26), 5, 3, 10, "40", 2),  # non-square, numeric baseline, top-2, short last chunk
        ((20, 20), 3, 2, 32, "blur", 1),
    ],
)
def test_matches_naive_reference(models, size, patch, stride, batch_size, baseline, top_k):
    model = models[size]
    images = raw_images(2, size, seed=patch)
    method = Occlusion.create(
        ModelAdapter(model, preprocess="unit"),
        patch=patch,
        stride=stride,
        baseline=baseline,
        top_k=top_k,
        eval_batch=batch_size,
    )
    drop_maps = method.drop_maps(images)
    explanations = method.explain(images)
    assert drop_maps.shape == (2, top_k, *size)
    for b, image in enumerate(images):
        expected, targets = reference(
            model, image, patch, stride, baseline_for(image, baseline, patch), top_k=top_k
        )
        assert explanations[b].targets == [int(c) for c in targets]
        assert np.abs(expected).max() > 1e-3  # the comparison below is meaningful
        np.testing.assert_allclose(drop_maps[b], expected, atol=1e-5)
        for k in range(top_k):
            positive = np.maximum(expected[k], 0)
            normalised = positive / (positive.max() + 1e-8)
            got = explanations[b].maps[k]
            assert got.shape == size and got.dtype == np.float32
            # the drop maps agree to 1e-5; normalising divides that error by the max drop
            np.testing.assert_allclose(got, normalised, atol=1e-5 / positive.max() + 1e-6)
            assert explanations[b].facts.max_drop[k] == pytest.approx(expected[k].max(), abs=1e-5)


@pytest.mark.parametrize("incremental", ["off", "on"])
@pytest.mark.parametrize("mode", ["symmetric", "caffe", "torch"])
def test_preprocessing_the_image_once_equals_preprocessing_every_copy(models, mode, incremental):
    """The method preprocesses the image and the baseline once and builds the copies from
    them; the reference preprocesses every occluded copy (caffe: with its channel reversal)."""
    from cnnvis_cli.core.preprocess import apply_preprocess

    image = raw_images(1, (16, 16), seed=3)[0]
    method = Occlusion.create(
        ModelAdapter(models[(16, 16)], preprocess=mode),
        patch=4,
        stride=2,
        baseline="blur",
        incremental=incremental,
    )
    engine = method.explain(image[None])[0].facts.engine  # the path this case exercises
    assert engine == ("incremental" if incremental == "on" else "naive")
    expected, _ = reference(
        models[(16, 16)],
        image,
        4,
        2,
        baseline_for(image, "blur", 4),
        preprocess=lambda x: apply_preprocess(mode, x).astype(np.float32),
    )
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(method.drop_maps(image[None])[0, 0], expected[0], atol=1e-5)


def test_signed_map_and_fixed_class(models):
    model = models[(20, 20)]
    images = raw_images(1, (20, 20), seed=5)
    method = Occlusion.create(
        ModelAdapter(model, preprocess="unit"),
        patch=5,
        stride=3,
        signed=True,
        class_index=2,
        eval_batch=8,
    )
    assert method.kind == "signed"
    explanation = method.explain(images)[0]
    expected, _ = reference(
        model, images[0], 5, 3, baseline_for(images[0], "mean", 5), class_index=2
    )
    assert explanation.targets == [2]
    np.testing.assert_allclose(
        explanation.maps[0], expected[0] / (np.abs(expected[0]).max() + 1e-8), atol=1e-5
    )
    assert explanation.maps[0].min() < 0 < explanation.maps[0].max()
    assert method.params()["signed"] is True


def test_dynamic_input_size(dynamic_model):
    adapter = ModelAdapter(dynamic_model, preprocess="unit")
    method = Occlusion.create(adapter, eval_batch=1 + 8)  # defaults from each image's size
    assert method.params()["positions"] is None
    for seed, size in enumerate([(14, 22), (17, 17)]):
        image = raw_images(1, size, seed=seed)
        patch = default_patch(*size)
        stride = max(1, patch // 2)
        expected, _ = reference(
            dynamic_model, image[0], patch, stride, baseline_for(image[0], "mean", patch)
        )
        np.testing.assert_allclose(method.drop_maps(image)[0], expected, atol=1e-5)
        explanation = method.explain(image)[0]
        assert explanation.facts.patch == patch and explanation.maps[0].shape == size


def test_locality_is_zero_outside_reach(keras_mod):
    """Output depends on rows 8..13, cols 5..10 only: patches not touching them drop nothing.

    Nothing means float32 rounding at most: BLAS may block a batch's rows differently, so two
    identical rows can differ in the last bit (seen with TensorFlow 2.16; 2.21 gives exact 0).
    """
    keras_mod.utils.set_random_seed(3)
    inputs = keras_mod.Input((20, 20, 3))
    x = keras_mod.layers.Cropping2D(((8, 6), (5, 9)))(inputs)
    x = keras_mod.layers.Flatten()(x)
    outputs = keras_mod.layers.Dense(3, activation="softmax")(x)
    model = keras_mod.Model(inputs, outputs)
    patch, stride = 4, 3
    method = Occlusion.create(
        ModelAdapter(model, preprocess="unit"), patch=patch, stride=stride, eval_batch=10
    )
    images = raw_images(2, (20, 20), seed=9)
    drop_maps = method.drop_maps(images)
    maps = np.stack([e.maps[0] for e in method.explain(images)])

    def reach(lo: int, hi: int) -> np.ndarray:  # indices covered by a patch overlapping [lo, hi)
        covered = np.zeros(20, bool)
        for c in corners(20, patch, stride):
            if c < hi and c + patch > lo:
                covered[c : c + patch] = True
        return covered

    inside = reach(8, 14)[:, None] & reach(5, 11)[None, :]
    assert not inside.all()
    for b in range(2):
        assert np.abs(drop_maps[b, 0][~inside]).max() <= 1e-6 * np.abs(drop_maps[b, 0]).max()
        assert maps[b][~inside].max() <= 1e-6
        assert maps[b][inside].max() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(("incremental", "used"), [("off", "occluded_fn"), ("on", "incremental")])
def test_traced_once_and_progress(models, incremental, used):
    adapter = ModelAdapter(models[(16, 16)], preprocess="unit")
    method = Occlusion.create(
        adapter, patch=4, stride=3, eval_batch=7, incremental=incremental
    )  # 5 x 5 = 25 positions
    assert method.params()["positions"] == 25
    fractions: list[float] = []
    for seed in range(3):  # several image batches, each ending in a short chunk (25 = 3 * 7 + 4)
        fractions.clear()
        method.explain(raw_images(2 if seed < 2 else 1, (16, 16), seed=seed), fractions.append)
    counts = method.trace_counts()
    assert counts["predict_fn"] == 1 and counts[used] == 1  # traced once, reused
    assert fractions[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(fractions))


def test_repeated_images_are_occluded_once(models):
    """Padding copies (e.g. from a caller's Method.explain) cost nothing and match the first."""
    adapter = ModelAdapter(models[(16, 16)], preprocess="unit")
    method = Occlusion.create(adapter, patch=4, stride=3, eval_batch=25)
    image = raw_images(1, (16, 16), seed=4)
    fractions: list[float] = []
    explanations = method.explain(np.repeat(image, 3, axis=0), fractions.append)
    # the first image's chunks end at a third; each copy then jumps a third at once, unevaluated
    assert fractions[-3:] == pytest.approx([1 / 3, 2 / 3, 1.0])
    for explanation in explanations[1:]:
        np.testing.assert_array_equal(explanation.maps[0], explanations[0].maps[0])


def test_defaults_and_params(models):
    assert default_patch(224, 224) == 16
    assert default_patch(96, 96) == 7
    assert default_patch(5, 5) == 1
    method = Occlusion.create(ModelAdapter(models[(18, 26)], preprocess="unit"))
    params = method.params()
    assert params["patch"] == 1 and params["stride"] == 1 and params["positions"] == 18 * 26
    assert params["baseline"] == "mean" and params["signed"] is False
    assert Occlusion.create(ModelAdapter(models[(18, 26)]), patch=6).params()["stride"] == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"patch": 21}, "--patch 21 is larger than the model input"),
        ({"patch": 0}, "--patch must be at least 1"),
        ({"stride": 0}, "--stride must be at least 1"),
        ({"baseline": "purple"}, "unknown --baseline 'purple'"),
        ({"baseline": "nan"}, "unknown --baseline 'nan'"),
    ],
)
def test_validation(models, options, message):
    with pytest.raises(ValueError, match=message):
        Occlusion.create(ModelAdapter(models[(20, 20)]), **options)


def test_bad_baseline_lists_choices(models):
    with pytest.raises(ValueError, match="mean, zero, gray, blur"):
        Occlusion.create(ModelAdapter(models[(20, 20)]), baseline="white")


def test_model_sees_at_most_eval_batch_copies_whatever_the_positions(keras_mod, monkeypatch):
    """Memory is flat in the number of positions: each model call gets <= --eval-batch copies,
    and every position is evaluated once (padding aside)."""
    keras_mod.utils.set_random_seed(4)
    inputs = keras_mod.Input((48, 48, 3))
    x = keras_mod.layers.Conv2D(2, 3, strides=4, activation="relu")(inputs)
    x = keras_mod.layers.GlobalAveragePooling2D()(x)
    model = keras_mod.Model(inputs, keras_mod.layers.Dense(2, activation="softmax")(x))
    adapter = ModelAdapter(model, preprocess="unit")
    seen: list[int] = []
    model_output = adapter.model_output

    def recording(batch):
        seen.append(int(batch.shape[0]))  # static: the traced chunk size
        return model_output(batch)

    monkeypatch.setattr(adapter, "model_output", recording)
    dense = Occlusion.create(adapter, patch=8, stride=1, eval_batch=128, incremental="off")
    fractions: list[float] = []
    explanation = dense.explain(raw_images(1, (48, 48)), fractions.append)[0]
    positions = 41 * 41
    assert dense.params()["positions"] == positions and explanation.maps[0].shape == (48, 48)
    assert max(seen) <= 128
    chunk = seen[-1]  # the occlusion function's trace
    assert len(fractions) * chunk >= positions > (len(fractions) - 1) * chunk

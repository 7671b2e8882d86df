"""XGrad-CAM, Eigen-CAM, Eigen-Grad-CAM, Grad-CAM element-wise and Ablation-CAM against NumPy
references; --eigen-smooth, --aug-smooth and several --layer against manual computations."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.methods.ablationcam import AblationCAM
from cnnvis_cli.methods.cam import AUGMENTATIONS, CAMOptions
from cnnvis_cli.methods.eigencam import EigenCAM, EigenGradCAM
from cnnvis_cli.methods.gradcam import GradCAM
from cnnvis_cli.methods.gradcam_elementwise import GradCAMElementWise
from cnnvis_cli.methods.xgradcam import XGradCAM
from tests.conftest import DEMO, SAMPLES, invoke, record_batches, run_saving_raw
from tests.test_cam_family import _normalise, _relu, features_and_gradients


def projection(weighted: np.ndarray) -> np.ndarray:
    """Per image: the (h*w x k) matrix on its first right singular vector (NumPy SVD, float64),
    signed so that it sums to >= 0, not centred."""
    out = []
    for image in weighted:
        matrix = image.reshape(-1, image.shape[-1])
        _, _, vt = np.linalg.svd(matrix, full_matrices=False)
        p = matrix @ vt[0]
        out.append((-p if p.sum() < 0 else p).reshape(image.shape[:2]))
    return np.stack(out)


def xgradcam_reference(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Fu et al. (2020): w_k = sum(g A) / (sum A + 1e-7), per image and channel, by loops."""
    out = np.zeros(a.shape[:3])
    for b in range(a.shape[0]):
        for k in range(a.shape[3]):
            weight = (g[b, :, :, k] * a[b, :, :, k]).sum() / (a[b, :, :, k].sum() + 1e-7)
            out[b] += weight * a[b, :, :, k]
    return _relu(out)


def elementwise_reference(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return _relu(_relu(g * a).sum(axis=-1))


def eigengrad_reference(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    return _relu(projection(g * a))


METHODS = {
    "xgradcam": (XGradCAM, xgradcam_reference),
    "gradcam-elementwise": (GradCAMElementWise, elementwise_reference),
    "eigengradcam": (EigenGradCAM, eigengrad_reference),
}


def build_two_conv(keras, seed: int = 5, size=(16, 20)):
    """conv1 -> max-pool -> conv2 -> flatten -> dense (linear head)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((*size, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flat")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def model(keras_mod):
    return build_two_conv(keras_mod)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(11).uniform(0, 1, (4, 16, 20, 3)).astype(np.float32)


def top_classes(model, images, k: int = 2) -> np.ndarray:
    return np.argsort(-model(images).numpy(), axis=1)[:, :k]


def stacked(explanations, k: int = 0) -> np.ndarray:
    return np.stack([e.maps[k] for e in explanations])


# -- the new CAM formulas -----------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["conv2", "conv1"])
@pytest.mark.parametrize("name", list(METHODS))
def test_matches_formula_for_top_two_classes(keras_mod, model, images, name, layer):
    cls, reference = METHODS[name]
    adapter = ModelAdapter(model, preprocess="raw")
    explanations = cls.create(adapter, layer=layer, top_k=2, batch_size=4).explain(images)
    order = top_classes(model, images)
    for k in range(2):
        a, g = features_and_gradients(keras_mod, model, layer, images, order[:, k])
        expected = _normalise(reference(a, g))
        got = stacked(explanations, k)
        assert [e.targets[k] for e in explanations] == list(order[:, k])
        assert got.shape == expected.shape == (4, *a.shape[1:3])
        assert got.max() > 0.99  # a real, non-trivial map
        np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("layer", ["conv2", "conv1"])
def test_eigencam_is_the_class_agnostic_first_component(keras_mod, model, images, layer):
    adapter = ModelAdapter(model, preprocess="raw")
    method = EigenCAM.create(adapter, layer=layer, top_k=2, batch_size=4)
    explanations = method.explain(images)
    a, _ = features_and_gradients(keras_mod, model, layer, images, top_classes(model, images)[:, 0])
    expected = _normalise(_relu(projection(a)))
    for k in range(2):  # the same map for both targets
        np.testing.assert_allclose(stacked(explanations, k), expected, atol=1e-4)
    assert "class-agnostic" in method.notes()[0]
    # ReLU activations: the signed first component is non-negative everywhere
    assert (projection(a) >= -1e-9 * np.abs(projection(a)).max()).all()
    # a centred projection (pytorch-grad-cam) sums to 0: it is a different map
    centred = np.stack([m - m.mean(axis=(0, 1)) for m in a])
    assert np.abs(projection(centred).reshape(4, -1).sum(axis=1)).max() < 1e-6 * np.abs(a).sum()
    # no gradient is taken: nothing in the traced graph differentiates
    graph_ops = {op.type for f in method.functions for g in f.graphs for op in g.get_operations()}
    assert "Svd" in graph_ops and not any("Grad" in t for t in graph_ops)


def test_eigen_smooth_projects_the_weighted_activations(keras_mod, model, images):
    adapter = ModelAdapter(model, preprocess="raw")
    got = stacked(GradCAM.create(adapter, eigen_smooth=True, batch_size=4).explain(images))
    a, g = features_and_gradients(
        keras_mod, model, "conv2", images, top_classes(model, images)[:, 0]
    )
    weighted = a * g.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got, _normalise(_relu(projection(weighted))), atol=1e-4)
    plain = stacked(GradCAM.create(adapter, batch_size=4).explain(images))
    assert np.abs(plain - got).max() > 0.05  # it changes the map


# -- several layers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "options"),
    [(GradCAM, {}), (AblationCAM, {"max_channels": 3})],
    ids=["grad", "ablation"],
)
def test_several_layers_average_normalized_maps_at_the_largest_resolution(
    model, images, cls, options
):
    adapter = ModelAdapter(model, preprocess="raw")
    both = cls.create(adapter, layer=["conv2", "conv1"], top_k=2, batch_size=4, **options)
    assert [info.path for info in both.layers] == ["conv2", "conv1"]
    assert both.params()["layer"] == ["conv2", "conv1"]
    got = both.explain(images)
    one = cls.create(adapter, layer="conv1", top_k=2, batch_size=4, **options).explain(images)
    two = cls.create(adapter, layer="conv2", top_k=2, batch_size=4, **options).explain(images)
    for b in range(4):
        assert got[b].targets == one[b].targets == two[b].targets
        for k in range(2):
            up = cv2.resize(two[b].maps[k], (20, 16), interpolation=cv2.INTER_LINEAR)
            expected = _normalise((one[b].maps[k] + up) / 2)
            assert got[b].maps[k].shape == (16, 20)
            np.testing.assert_allclose(got[b].maps[k], expected, atol=1e-5)


def test_layer_option_takes_a_string_or_a_list():
    assert CAMOptions(layer="conv1").layer == ["conv1"]
    assert CAMOptions(layer=["a", "b", "a"]).layer == ["a", "b"]
    assert CAMOptions(layer=[]).layer is None and CAMOptions().layer is None


# -- --aug-smooth -------------------------------------------------------------------------------


def augmented_mean(cls, adapter, image, zero_point: float, **options) -> np.ndarray:
    """The mean of the maps of the 4 variants, built by hand on raw pixels: the model input
    times f is raw' = z + f (raw - z) for preprocessing whose zero is raw z; every variant
    explains the original image's top class; flipped maps are flipped back."""
    target = int(np.argmax(adapter.outputs(image[None]).numpy()))
    maps = []
    for flip, factor in AUGMENTATIONS:
        variant = image[:, ::-1] if flip else image
        variant = zero_point + factor * (variant - zero_point)
        method = cls.create(adapter, class_index=target, batch_size=1, **options)
        cam = method.explain(np.ascontiguousarray(variant[None], dtype=np.float32))[0].maps[0]
        maps.append(cam[:, ::-1] if flip else cam)
    return np.mean(maps, axis=0)


@pytest.mark.parametrize(
    ("cls", "preprocess", "zero_point", "options"),
    [
        (GradCAM, "symmetric", 127.5, {}),
        (XGradCAM, "unit", 0.0, {"layer": ["conv1", "conv2"]}),
        (AblationCAM, "symmetric", 127.5, {"max_channels": 4}),
    ],
    ids=["gradcam-symmetric", "xgradcam-two-layers-unit", "ablationcam-symmetric"],
)
def test_aug_smooth_is_the_mean_of_four_augmented_maps(model, cls, preprocess, zero_point, options):
    adapter = ModelAdapter(model, preprocess=preprocess)
    images = np.random.default_rng(3).uniform(0, 255, (2, 16, 20, 3)).astype(np.float32)
    smoothed = cls.create(adapter, aug_smooth=True, batch_size=2, **options).explain(images)
    for b in range(2):
        expected = augmented_mean(cls, adapter, images[b], zero_point, **options)
        assert smoothed[b].targets == [int(np.argmax(adapter.outputs(images[b : b + 1])))]
        np.testing.assert_allclose(smoothed[b].maps[0], expected, atol=2e-5)
        plain = cls.create(adapter, batch_size=2, **options).explain(images)[b].maps[0]
        assert np.abs(plain - smoothed[b].maps[0]).max() > 1e-3  # the augmentation matters


# -- Ablation-CAM -------------------------------------------------------------------------------


def tail_logits(model, layer: str, features: np.ndarray) -> np.ndarray:
    """The logits computed from ``layer``'s output by calling the following layers in turn."""
    names = [lay.name for lay in model.layers]
    x = features
    for lay in model.layers[names.index(layer) + 1 :]:
        x = lay(x)
    return np.asarray(x, dtype=np.float64)


def ablation_reference(keras, model, layer, image, target, channels=None) -> np.ndarray:
    """Each channel zeroed in a copy of A, scored through the tail of the model (NumPy loop)."""
    a, _ = features_and_gradients(keras, model, layer, image[None], np.array([target]))
    y = tail_logits(model, layer, a.astype(np.float32))[0, target]
    count = a.shape[-1]
    channels = range(count) if channels is None else channels
    total = np.zeros(a.shape[1:3])
    for k in channels:
        ablated = a.copy()
        ablated[..., k] = 0.0
        y_k = tail_logits(model, layer, ablated.astype(np.float32))[0, target]
        total += (y - y_k) / abs(y) * a[0, :, :, k]
    return _normalise(_relu(total))


@pytest.mark.parametrize("layer", ["conv2", "conv1"])
def test_ablationcam_matches_per_channel_loop(keras_mod, model, images, layer):
    adapter = ModelAdapter(model, preprocess="raw")
    before = model(images).numpy()
    method = AblationCAM.create(adapter, layer=layer, top_k=2, eval_batch=5)
    explanations = method.explain(images[:2])
    order = top_classes(model, images[:2])
    for b in range(2):
        for k in range(2):
            expected = ablation_reference(keras_mod, model, layer, images[b], order[b, k])
            assert explanations[b].targets[k] == order[b, k]
            np.testing.assert_allclose(explanations[b].maps[k], expected, atol=1e-4)
    # the user's model is untouched after the call
    np.testing.assert_array_equal(model(images).numpy(), before)
    assert all("call" not in lay.__dict__ for lay in model.layers)


def test_ablationcam_max_channels_ablates_the_highest_variance_ones(keras_mod, model, images):
    adapter = ModelAdapter(model, preprocess="raw")
    explanation = AblationCAM.create(adapter, max_channels=3).explain(images[:1])[0]
    a, _ = features_and_gradients(keras_mod, model, "conv2", images[:1], np.array([0]))
    expected_channels = list(np.argsort(-a[0].var(axis=(0, 1)))[:3])
    assert explanation.facts.channels == expected_channels
    target = explanation.targets[0]
    expected = ablation_reference(keras_mod, model, "conv2", images[0], target, expected_channels)
    np.testing.assert_allclose(explanation.maps[0], expected, atol=1e-4)


def test_ablationcam_is_streamed_eval_batch_at_a_time(model, images, monkeypatch):
    adapter = ModelAdapter(model, preprocess="raw")
    seen = record_batches(adapter, monkeypatch)
    method = AblationCAM.create(adapter, eval_batch=4, batch_size=3)
    fractions: list[float] = []
    method.explain(images[:3], fractions.append)  # 3 images x 8 channels = 24 ablated copies
    method.explain(images[3:], fractions.append)  # 8 copies (the padding is not ablated)
    assert sorted(set(seen)) == [3, 4]  # the feature pass (one padded step) and 4 copies
    assert set(method.trace_counts().values()) == {1}
    assert fractions[-1] == pytest.approx(1.0)


# -- the command line ---------------------------------------------------------------------------

CAM_COMMANDS = {
    "xgradcam": [],
    "eigencam": [],
    "eigengradcam": [],
    "gradcam-elementwise": [],
    "ablationcam": ["--max-channels", "8", "--eval-batch", "8"],
}


@pytest.mark.parametrize("name", list(CAM_COMMANDS))
def test_cli_end_to_end_on_the_demo_model(tmp_path, name):
    raw, _ = run_saving_raw(name, SAMPLES / "scene_01.png", tmp_path, *CAM_COMMANDS[name])
    assert raw.shape == cv2.imread(str(SAMPLES / "scene_01.png")).shape[:2]
    assert raw.min() >= 0.0 and raw.max() <= 1.0 and raw.max() > 0.5


def test_cli_several_layers_and_smoothing(tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "gradcam", SAMPLES / "scene_01.png", "-m", DEMO, "-o", out, "--layer", "relu3",
        "--layer", "last_conv", "--aug-smooth", "--eigen-smooth", "--json", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    params = json.loads((out / "summary.json").read_text())["params"]
    assert params["layer"] == ["relu3", "last_conv"]
    assert params["aug_smooth"] is True and params["eigen_smooth"] is True


@pytest.mark.slow
def test_compare_with_new_methods(tmp_path):
    out = tmp_path / "out"
    result = invoke(
        "compare", SAMPLES / "scene_01.png", "-m", DEMO, "-o", out,
        "--methods", "xgradcam,eigencam,gradient-input", "--layer", "relu3", "--layer", "last_conv",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"]["methods"] == ["xgradcam", "eigencam", "gradient-input"]
    assert summary["params"]["xgradcam"]["layer"] == ["relu3", "last_conv"]
    assert cv2.imread(str(out / "scene_01_compare.png")) is not None


def test_help_lists_repeatable_layer():
    from cnnvis_cli.cli.methods import build_click_command, method_command

    for command in ("gradcam", "compare", "ablationcam", "guided-gradcam", "scorecam"):
        click_command = build_click_command(command, method_command(command), "Methods")
        layer = next(p for p in click_command.params if p.name == "layer")
        assert layer.multiple  # a list[str] field is a repeatable option
        result = invoke(command, "--help")
        assert result.exit_code == 0
        assert "--layer" in result.output and "repeat" in result.output
        smoothing = "--aug-smooth" in result.output and "--eigen-smooth" in result.output
        assert smoothing == (command != "guided-gradcam")

"""Input preprocessing modes: from raw 0..255 pixels to what a model was trained on.

Every method works on *raw* pixels and applies preprocessing inside its compiled function, so an
occluder or a baseline means the same thing whatever the model's normalisation.

=========== ===================================================================================
mode        mapping of a raw RGB pixel value x in [0, 255]
=========== ===================================================================================
raw         x (the model rescales itself, e.g. starts with a ``Rescaling`` layer)
unit        x / 255, in [0, 1]
symmetric   x / 127.5 - 1, in [-1, 1] (MobileNet, Inception)
caffe       RGB -> BGR, minus the ImageNet BGR means (103.939, 116.779, 123.68) (VGG, ResNet)
torch       (x / 255 - mean) / std with ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224,
            0.225) (DenseNet)
auto        see :func:`auto_preprocess`
=========== ===================================================================================

Every mode maps each pixel on its own (a per-pixel affine map, with a channel swap for caffe), so
occluding raw pixels and then preprocessing equals occluding the preprocessed image with the
preprocessed baseline.
"""

from __future__ import annotations

import re
from typing import Any

PREPROCESS_MODES = ("auto", "unit", "raw", "symmetric", "caffe", "torch")
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
SCALING_LAYERS = ("Rescaling", "Normalization")

# Names keras.applications gives its models (Keras 2 and 3), and each family's preprocessing.
# A backbone built with its own preprocessing layers (EfficientNet, EfficientNetV2, ConvNeXt,
# MobileNetV3 by default) is caught by SCALING_LAYERS before these names are looked at; the modes
# given here for those families are for the same models built without them.
APPLICATION_NAMES: tuple[tuple[str, str, str], ...] = (
    (r"mobilenetv2_[\d.]+_\d+", "symmetric", "MobileNetV2"),
    (r"mobilenet_[\d.]+_\d+", "symmetric", "MobileNet"),
    (r"resnet\d+v2", "symmetric", "ResNetV2"),
    (r"resnet\d+", "caffe", "ResNet"),
    (r"vgg1[69]", "caffe", "VGG"),
    (r"densenet\d+", "torch", "DenseNet"),
    (r"inception_resnet_v2", "symmetric", "InceptionResNetV2"),
    (r"inception_v3", "symmetric", "InceptionV3"),
    (r"xception", "symmetric", "Xception"),
    (r"nasnet(mobile|large)?", "symmetric", "NASNet"),
    (r"efficientnetb\d", "raw", "EfficientNet"),
    (r"efficientnetv2-\w+", "symmetric", "EfficientNetV2 (built without preprocessing)"),
    (r"convnext_\w+", "torch", "ConvNeXt (built without preprocessing)"),
    (r"mobilenetv3(small|large)", "symmetric", "MobileNetV3 (built without preprocessing)"),
)


def application_family(name: str) -> tuple[str, str] | None:
    """(preprocessing mode, family) when ``name`` is a keras.applications model's name."""
    for pattern, mode, family in APPLICATION_NAMES:
        if re.fullmatch(pattern, name, flags=re.IGNORECASE):
            return mode, family
    return None


def _layers(model: Any) -> list[Any]:
    layers = getattr(model, "layers", None)
    return [layer for layer in layers or [] if type(layer).__name__ != "InputLayer"]


def _is_container(layer: Any) -> bool:
    return bool(_layers(layer)) and hasattr(layer, "layers")


def auto_preprocess(model: Any) -> tuple[str, str]:
    """The ``auto`` preprocessing mode for ``model`` and the reason, for the run header.

    In order: a model (or the backbone it starts with) whose first layer is a ``Rescaling`` /
    ``Normalization`` layer rescales itself (``raw``); a model that is, or starts with, a nested
    ``keras.applications`` backbone (named like ``mobilenetv2_1.00_160``, ``resnet50``,
    ``efficientnetb0``, ``vgg16``: the usual Keras-2 transfer-learning ``.h5``) gets its family's
    preprocessing; anything else gets ``unit`` (x / 255).
    """
    current = model
    for _ in range(8):  # descend through a few levels of nesting at most
        family = application_family(getattr(current, "name", "") or "")
        layers = _layers(current)
        first = layers[0] if layers else None
        if first is not None and type(first).__name__ in SCALING_LAYERS:
            where = "the model" if current is model else f"its backbone {current.name!r}"
            return "raw", f"{where} starts with its own {type(first).__name__} layer"
        if family is not None:
            mode, label = family
            where = "the model is" if current is model else "nested backbone"
            return mode, f"{where} {label} ({current.name!r})"
        if first is None or not _is_container(first):
            break
        current = first
    return "unit", "no scaling layer or known backbone found; assuming inputs in [0, 1]"


def apply_preprocess(mode: str, raw: Any) -> Any:
    """Apply a concrete preprocessing mode to a float tensor of raw pixels (..., channels)."""
    if mode == "raw":
        return raw
    if mode == "unit":
        return raw / 255.0
    if mode == "symmetric":
        return raw / 127.5 - 1.0
    channels = raw.shape[-1]
    if mode == "caffe":
        if channels == 1:
            return raw - sum(CAFFE_BGR_MEAN) / 3
        return raw[..., ::-1] - CAFFE_BGR_MEAN
    if mode == "torch":
        if channels == 1:
            return (raw / 255.0 - sum(TORCH_MEAN) / 3) / (sum(TORCH_STD) / 3)
        return (raw / 255.0 - TORCH_MEAN) / TORCH_STD
    raise ValueError(f"unknown preprocessing mode {mode!r}")

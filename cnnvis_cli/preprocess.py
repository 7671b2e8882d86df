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
auto        raw when the model starts with a Rescaling/Normalization layer, else unit
=========== ===================================================================================
"""

from __future__ import annotations

from typing import Any

PREPROCESS_MODES = ("auto", "unit", "raw", "symmetric", "caffe", "torch")
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def resolve_preprocess(mode: str, model_rescales_itself: bool) -> str:
    """Turn ``auto`` into a concrete mode."""
    if mode != "auto":
        return mode
    return "raw" if model_rescales_itself else "unit"


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

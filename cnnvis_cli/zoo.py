"""``-m keras:NAME``: Keras applications with their own preprocessing and ImageNet class names.

Weights come from the Keras cache (``~/.keras/models``), a file given with ``--weights PATH``, or
``--weights none`` (random initialisation: useful for tests and for timing). Nothing is fetched
when the cache is missing the file: the error says which file to put where.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from cnnvis_cli._tf import quiet_native_stderr, tf_and_keras
from cnnvis_cli.errors import ModelError

PREFIX = "keras:"
IMAGENET_CLASSES = Path(__file__).resolve().parent / "data" / "imagenet_classes.json"


@dataclass(frozen=True)
class Application:
    """A ``keras.applications`` constructor, its preprocessing mode and input side."""

    constructor: str
    preprocess: str
    size: int = 224


APPLICATIONS: dict[str, Application] = {
    app.constructor.lower(): app
    for app in (
        Application("MobileNet", "symmetric"),
        Application("MobileNetV2", "symmetric"),
        Application("MobileNetV3Small", "raw"),  # rescales inside the model
        Application("MobileNetV3Large", "raw"),
        Application("ResNet50", "caffe"),
        Application("ResNet101", "caffe"),
        Application("ResNet50V2", "symmetric"),
        Application("VGG16", "caffe"),
        Application("VGG19", "caffe"),
        Application("DenseNet121", "torch"),
        Application("EfficientNetB0", "raw"),  # normalises inside the model
        Application("EfficientNetB1", "raw", 240),
        Application("EfficientNetV2B0", "raw"),
        Application("ConvNeXtTiny", "raw"),
        Application("InceptionV3", "symmetric", 299),
        Application("Xception", "symmetric", 299),
    )
}


def is_application(spec: str) -> bool:
    return spec.lower().startswith(PREFIX)


def imagenet_class_names() -> list[str] | None:
    """The 1000 ImageNet class names shipped with cnnvis, in index order."""
    if not IMAGENET_CLASSES.is_file():
        return None
    return json.loads(IMAGENET_CLASSES.read_text(encoding="utf-8"))


def _missing_weights_error(name: str, exc: Exception) -> ModelError:
    found = re.search(r"https?://\S+?/([^/\s]+\.h5)", str(exc))
    fname = found.group(1) if found else "the weights file"
    cache = Path.home() / ".keras" / "models"
    return ModelError(
        f"keras:{name}: ImageNet weights are not in the Keras cache and could not be "
        f"downloaded; put {fname} in {cache}/, or pass --weights PATH (or --weights none for "
        "random weights)"
    )


def load_application(spec: str, weights: str = "imagenet") -> tuple[object, str, list[str]]:
    """Build ``keras:NAME``; returns (model, preprocessing mode, class names)."""
    name = spec[len(PREFIX) :]
    app = APPLICATIONS.get(name.lower())
    if app is None:
        known = ", ".join(a.constructor for a in APPLICATIONS.values())
        raise ModelError(f"unknown Keras application {name!r}; cnnvis knows {known}")
    _, keras = tf_and_keras()
    constructor = getattr(keras.applications, app.constructor)
    if weights.lower() == "none":
        source = None
    elif weights.lower() == "imagenet":
        source = "imagenet"
    else:
        if not Path(weights).is_file():
            raise ModelError(f"weights file not found: {weights}")
        source = weights
    try:
        with quiet_native_stderr():
            model = constructor(weights=source, input_shape=(app.size, app.size, 3))
    except Exception as exc:  # Keras raises plain Exception on a failed download
        if source == "imagenet" and ("fetch" in str(exc).lower() or "URL" in str(exc)):
            raise _missing_weights_error(app.constructor, exc) from None
        raise ModelError(f"keras:{app.constructor}: cannot build the model ({exc})") from None
    return model, app.preprocess, imagenet_class_names() or []

"""``-m keras:NAME``: Keras applications with their own preprocessing and ImageNet class names.

Weights come from the Keras cache (``$KERAS_HOME/models``, default ``~/.keras/models``), a file
given with ``--weights PATH``, or ``--weights none`` (random initialisation: useful for tests and
for timing). cnnvis never downloads: while an application is built, Keras' ``get_file`` is
replaced by :func:`_cached_file`, which returns the cached file or raises an error saying which
file to put where — no network call is ever made.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnvis_cli.core.tf import quiet_native_stderr, tf_and_keras
from cnnvis_cli.errors import ModelError

PREFIX = "keras:"
IMAGENET_CLASSES = Path(__file__).resolve().parents[1] / "data" / "imagenet_classes.json"


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


class MissingWeights(Exception):
    """The weights file an application needs is not in the Keras cache."""

    def __init__(self, fname: str, folder: Path) -> None:
        super().__init__(fname)
        self.fname, self.folder = fname, folder


def keras_cache_dir() -> Path:
    """The folder Keras caches downloads in: ``$KERAS_HOME``, else ``~/.keras``."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def _cached_file(
    fname: str | None = None,
    origin: str | None = None,
    *,
    cache_subdir: str = "datasets",
    cache_dir: str | None = None,
    **_ignored: Any,
) -> str:
    """Keras' ``get_file`` without the download: the cached path, or MissingWeights."""
    name = fname or os.path.basename(urllib.parse.urlsplit(origin or "").path)
    folder = (Path(cache_dir).expanduser() if cache_dir else keras_cache_dir()) / cache_subdir
    path = folder / name
    if not path.is_file():
        raise MissingWeights(name, folder)
    return str(path)


@contextlib.contextmanager
def offline_get_file() -> Iterator[None]:
    """Within the block, Keras' ``get_file`` only ever returns files already in its cache."""
    from keras.src.utils import file_utils

    _, keras = tf_and_keras()
    saved = file_utils.get_file, keras.utils.get_file
    file_utils.get_file = keras.utils.get_file = _cached_file
    try:
        yield
    finally:
        file_utils.get_file, keras.utils.get_file = saved


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
        with quiet_native_stderr(), offline_get_file():
            model = constructor(weights=source, input_shape=(app.size, app.size, 3))
    except MissingWeights as missing:
        raise ModelError(
            f"keras:{app.constructor}: ImageNet weights are not in the Keras cache and cnnvis "
            f"never downloads; put {missing.fname} in {missing.folder}/, or pass --weights PATH "
            "(or --weights none for random weights)"
        ) from None
    except Exception as exc:  # Keras raises many types for a bad weights file
        raise ModelError(f"keras:{app.constructor}: cannot build the model ({exc})") from None
    return model, app.preprocess, imagenet_class_names() or []

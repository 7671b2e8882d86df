"""Load a model from a file, a SavedModel folder or ``keras:NAME``, and wrap it in an adapter.

``.keras`` and ``.h5`` files load with Keras' safe mode on. A ``.keras`` file is a zip archive:
before Keras opens it, the sizes its central directory declares are checked, so a crafted file
whose ``config.json`` inflates to gigabytes is refused instead of exhausting memory (Python's
``zipfile`` never inflates a member past its declared size).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.preprocess import PREPROCESS_MODES
from cnnvis_cli.core.tf import quiet_native_stderr, tf_and_keras
from cnnvis_cli.core.zoo import is_application, load_application
from cnnvis_cli.demo.paths import is_demo_model, resolve_demo_model
from cnnvis_cli.errors import ModelError

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
MAX_JSON_MEMBER = 64 * 2**20  # config.json / metadata.json: a real one is kilobytes
MAX_MEMBER = 32 * 2**30
MAX_RATIO = 200  # a large member inflating more than this is not real weights


def check_keras_archive(path: Path) -> None:
    """Refuse a ``.keras`` zip whose declared sizes could exhaust memory when Keras reads it."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip: Keras' own loading error explains it
    for member in members:
        size, packed = member.file_size, max(member.compress_size, 1)
        too_big = size > MAX_MEMBER or (
            member.filename.endswith(".json") and size > MAX_JSON_MEMBER
        )
        if too_big or (size > MAX_JSON_MEMBER and size / packed > MAX_RATIO):
            raise ModelError(
                f"{path}: refusing to load: its member {member.filename!r} would inflate to "
                f"{size / 2**20:,.0f} MiB from {packed / 2**20:,.1f} MiB (not a normal Keras "
                "model file); re-save the model with model.save('model.keras')"
            )


def read_class_names(path: Path) -> list[str]:
    """A JSON list (or ``{"0": name, ...}``) or a text file with one name per line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            return [str(data[k]) for k in sorted(data, key=lambda k: int(k))]
        return [str(name) for name in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


def sidecar_class_names(model_path: Path) -> Path | None:
    """``<stem>.classes.json`` or ``<stem>.classes.txt`` beside the model file, if present."""
    for suffix in (".classes.json", ".classes.txt"):
        candidate = model_path.with_name(model_path.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def custom_objects_from(path: Path) -> dict[str, Any]:
    """Run a Python file and collect its custom objects (this executes the file's code).

    The file may define ``CUSTOM_OBJECTS = {...}``; otherwise every public class and function
    it defines is registered under its own name.
    """
    import importlib.util

    if not path.is_file():
        raise ModelError(f"--custom-objects file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"cnnvis_custom_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelError(f"{path}: error while running the custom-objects file ({exc})") from exc
    explicit = getattr(module, "CUSTOM_OBJECTS", None)
    if isinstance(explicit, dict):
        return dict(explicit)
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module.__name__
    }


def explain_load_error(path: Path, exc: Exception) -> ModelError:
    """Turn Keras' loading errors into one actionable line."""
    text = " ".join(str(exc).split())
    if "safe_mode" in text or "Lambda" in text:
        return ModelError(
            f"{path}: the model contains a Lambda layer or other code that Keras' safe mode "
            "refuses to run; if you trust the file, re-run with --unsafe-load (this executes "
            "code stored in the model)"
        )
    unknown = re.search(r"[Cc]ould not locate (?:class|function) '([^']+)'", text)
    if unknown:
        return ModelError(
            f"{path}: the model uses the custom object {unknown.group(1)!r}; pass "
            "--custom-objects FILE.py that defines it (this executes the file's code)"
        )
    if isinstance(exc, (OSError, EOFError)) or "zip" in text.lower() or "signature" in text:
        return ModelError(f"{path}: cannot load the model: corrupt or not a Keras model file")
    reason = text[:200] if text else type(exc).__name__
    return ModelError(f"{path}: cannot load the model ({reason})")


def load_saved_model(path: Path) -> Any:
    """Wrap a TensorFlow SavedModel directory as a forward-only Keras model."""
    tf, keras = tf_and_keras()
    try:
        with quiet_native_stderr():
            loaded = tf.saved_model.load(str(path))
            signature = loaded.signatures["serving_default"]
            inputs = signature.structured_input_signature[1]
            layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    except Exception as exc:
        raise ModelError(f"{path}: cannot load the SavedModel ({exc})") from exc
    if len(inputs) != 1:
        raise ModelError(
            f"{path}: the SavedModel takes {len(inputs)} inputs; cnnvis explains models with one "
            "image input"
        )
    spec = next(iter(inputs.values()))
    tensor = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype.name)
    outputs = layer(tensor)
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    return keras.Model(tensor, outputs, name=path.name)


def load_keras_file(path: Path, *, unsafe: bool, custom_objects: Path | None) -> Any:
    """A ``.keras`` / ``.h5`` model, loaded with safe mode on unless ``unsafe``."""
    _, keras = tf_and_keras()
    if path.suffix.lower() == ".keras":
        check_keras_archive(path)
    objects = custom_objects_from(Path(custom_objects)) if custom_objects else None
    try:
        with quiet_native_stderr():
            return keras.saving.load_model(
                path, compile=False, safe_mode=not unsafe, custom_objects=objects
            )
    except Exception as exc:  # Keras raises many types for a bad file
        raise explain_load_error(path, exc) from exc


def load_model(
    spec: str | Path,
    *,
    class_names: str | Path | None = None,
    preprocess: str = "auto",
    weights: str = "imagenet",
    output: str | int | None = None,
    unsafe: bool = False,
    custom_objects: str | Path | None = None,
) -> ModelAdapter:
    """Load a model and wrap it in a ModelAdapter.

    ``spec`` is a ``.keras`` / ``.h5`` file (loaded with Keras' safe mode on unless ``unsafe``),
    a TensorFlow SavedModel directory (forward passes only), ``keras:NAME`` for a Keras
    application, or ``demo:shapes`` / ``demo:shortcut`` for the bundled demo models. Class
    names come from ``class_names`` (JSON list or one name per line), a
    ``<stem>.classes.json`` file beside the model, or ImageNet's for ``keras:`` models.
    """
    if preprocess not in PREPROCESS_MODES:
        raise ModelError(f"unknown --preprocess {preprocess!r}; use one of {PREPROCESS_MODES}")
    names = None
    forward_only = False
    reason = None
    if is_demo_model(str(spec)):
        try:
            spec = resolve_demo_model(str(spec))
        except ValueError as exc:
            raise ModelError(str(exc)) from None
    if is_application(str(spec)):
        model, family_preprocess, names = load_application(str(spec), weights)
        source = str(spec)
        if preprocess == "auto":
            preprocess, reason = family_preprocess, f"the {source} family's preprocessing"
    else:
        path = Path(spec)
        source = str(path)
        if not path.exists():
            raise ModelError(f"model file not found: {path}")
        if path.is_dir() and (path / "saved_model.pb").is_file():
            model, forward_only = load_saved_model(path), True
        elif path.is_dir() or path.suffix.lower() not in MODEL_SUFFIXES:
            raise ModelError(
                f"{path}: not a Keras model; cnnvis loads .keras and .h5 files, SavedModel "
                "directories and keras:NAME (save yours with model.save('model.keras'))"
            )
        else:
            model = load_keras_file(path, unsafe=unsafe, custom_objects=custom_objects)
        sidecar = sidecar_class_names(path)
        if class_names is None and sidecar is not None:
            class_names = sidecar
    if class_names is not None:
        names_path = Path(class_names)
        try:
            names = read_class_names(names_path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{names_path}: cannot read class names ({exc})") from exc
    return ModelAdapter(
        model,
        source=source,
        class_names=names or None,
        preprocess=preprocess,
        output=output,
        forward_only=forward_only,
        preprocess_reason=reason,
    )

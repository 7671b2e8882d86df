"""Load a Keras model and describe what the explanation methods need from it.

``ModelAdapter`` hides the differences between user models: where the input size and channel
count come from, which preprocessing the model expects, which layer Grad-CAM should use (found
through nested models), and what the *score* of a class is — the logit before a final softmax
or sigmoid, since a saturated probability has a vanishing gradient (Selvaraju et al., 2017).

Intermediate tensors are read with *taps*: while a forward pass is traced, the tapped layer's
``call`` is wrapped so that its output (or, for the head, its pre-activation output) is recorded.
Gradients then flow from the outermost output through any nesting, with no graph surgery — the
usual cause of "Graph disconnected" errors on transfer-learning models.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnvis_cli._tf import quiet_native_stderr, tf_and_keras
from cnnvis_cli.errors import ModelError
from cnnvis_cli.preprocess import PREPROCESS_MODES, resolve_preprocess
from cnnvis_cli.zoo import is_application, load_application

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
SCORE_ACTIVATIONS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class LayerInfo:
    """A layer reachable from the model, with its slash-separated path through nested models."""

    path: str
    layer: Any
    class_name: str
    output_shape: tuple[int | None, ...] | None

    @property
    def is_spatial(self) -> bool:
        """A 4-D output (batch, height, width, channels) with more than one spatial position."""
        shape = self.output_shape
        if shape is None or len(shape) != 4:
            return False
        height, width = shape[1], shape[2]
        return height is None or width is None or height * width > 1


@dataclass(frozen=True)
class Forward:
    """One forward pass: tapped features, per-class scores (logits) and per-class outputs."""

    features: Any  # (B, h, w, k) output of the tapped layer, or None
    scores: Any  # (B, C) pre-activation class scores
    outputs: Any  # (B, C) model outputs (probabilities for softmax/sigmoid heads)


def _output_shape(layer: Any) -> tuple[int | None, ...] | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def _is_container(layer: Any) -> bool:
    return hasattr(layer, "layers") and isinstance(layer.layers, list) and bool(layer.layers)


def iter_layers(model: Any, prefix: str = "") -> Iterator[LayerInfo]:
    """Yield every non-container layer depth-first, in call order, through nested models."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if _is_container(layer):
            yield from iter_layers(layer, prefix=f"{path}/")
        elif type(layer).__name__ != "InputLayer":
            yield LayerInfo(path, layer, type(layer).__name__, _output_shape(layer))


def _activation_name(layer: Any) -> str | None:
    kind = type(layer).__name__
    if kind == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None)


def _head_layer(model: Any, output_index: int = 0) -> Any:
    """The layer producing the model's chosen output, descending into nested models."""
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    with contextlib.suppress(AttributeError, IndexError, TypeError):
        layer = model.outputs[output_index]._keras_history.operation
    if layer is not None and _is_container(layer):
        return _head_layer(layer)
    return layer


def _output_names(model: Any) -> list[str]:
    names = []
    for i, tensor in enumerate(getattr(model, "outputs", None) or []):
        try:
            names.append(tensor._keras_history.operation.name)
        except AttributeError:
            names.append(f"output_{i}")
    return names


class _Taps:
    """Record layer outputs during a forward pass by wrapping ``layer.call`` temporarily.

    ``linear_head=True`` records the head's pre-activation output: the layer's activation is
    swapped for the identity during the call, and applied afterwards to keep the output unchanged.
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self._wrapped: list[Any] = []

    def tap(self, key: str, layer: Any, *, linear_head: bool = False, record_input: bool = False):
        original = layer.call
        values = self.values

        def call(*args: Any, **kwargs: Any) -> Any:
            if record_input:
                values[key] = args[0]
                return original(*args, **kwargs)
            if linear_head:
                activation = layer.activation
                object.__setattr__(layer, "activation", _identity)
                try:
                    logits = original(*args, **kwargs)
                finally:
                    object.__setattr__(layer, "activation", activation)
                values[key] = logits
                return activation(logits)
            out = original(*args, **kwargs)
            values[key] = out
            return out

        object.__setattr__(layer, "call", call)
        self._wrapped.append(layer)

    def __enter__(self) -> _Taps:
        return self

    def __exit__(self, *exc: object) -> None:
        for layer in self._wrapped:
            if "call" in layer.__dict__:
                object.__delattr__(layer, "call")
        self._wrapped.clear()


def _identity(x: Any) -> Any:
    return x


class ModelAdapter:
    """A loaded Keras model plus everything the methods need to explain it."""

    def __init__(
        self,
        model: Any,
        *,
        source: str = "<in-memory>",
        class_names: list[str] | None = None,
        preprocess: str = "auto",
        output: str | int | None = None,
        forward_only: bool = False,
    ) -> None:
        self.model = model
        self.source = source
        self.forward_only = forward_only
        shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
        if shape is None or len(shape) != 4:
            raise ModelError(
                f"{source}: expected an image model with a 4-D input (batch, height, width, "
                f"channels), got input shape {shape}"
            )
        self.input_height: int | None = shape[1]
        self.input_width: int | None = shape[2]
        self.channels: int = int(shape[3] or 3)
        if self.channels not in (1, 3):
            raise ModelError(
                f"{source}: input has {self.channels} channels; cnnvis supports 1 or 3"
            )
        self.all_layers: list[LayerInfo] = list(iter_layers(model))
        self.preprocess_mode = resolve_preprocess(preprocess, self._starts_with_scaling())
        self.output_names = _output_names(model)
        self.output_index = self._resolve_output(output)
        self.head_layer = _head_layer(model, self.output_index)
        self.head = self._detect_head() if self.head_layer is not None else "linear"
        out_shape = tuple(model.outputs[self.output_index].shape)
        if len(out_shape) != 2:
            raise ModelError(
                f"{source}: output {self.output_names[self.output_index]!r} has shape "
                f"{out_shape}; cnnvis explains classifiers with a (batch, classes) output"
            )
        self.output_units = int(out_shape[-1]) if out_shape[-1] else 1
        self.num_classes = 2 if self._binary else self.output_units
        self.class_names = class_names
        if class_names is not None and len(class_names) != self.num_classes:
            raise ModelError(
                f"{source}: {len(class_names)} class names given for {self.num_classes} classes"
            )

    # -- description --------------------------------------------------------------------------

    def _resolve_output(self, output: str | int | None) -> int:
        """``--output NAME|INDEX``; default the first output."""
        count = len(self.output_names)
        if output is None:
            return 0
        if isinstance(output, int) or str(output).lstrip("-").isdigit():
            index = int(output)
            if not 0 <= index < count:
                raise ModelError(f"--output {index} is out of range: the model has {count}")
            return index
        if output in self.output_names:
            return self.output_names.index(output)
        raise ModelError(f"no output named {output!r}; outputs: {', '.join(self.output_names)}")

    @property
    def _binary(self) -> bool:
        return self.head == "sigmoid" and self.output_units == 1

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) the model expects, or None when the input size is dynamic."""
        if self.input_height is None or self.input_width is None:
            return None
        return int(self.input_height), int(self.input_width)

    def _starts_with_scaling(self) -> bool:
        first = next(iter(self.all_layers), None)
        return first is not None and first.class_name in ("Rescaling", "Normalization")

    def _detect_head(self) -> str:
        name = _activation_name(self.head_layer)
        return name if name in SCORE_ACTIVATIONS else "linear"

    def class_name(self, index: int) -> str | None:
        """The class name for ``index`` when names are known."""
        if self.class_names is None or not 0 <= index < len(self.class_names):
            return None
        return self.class_names[index]

    def class_index(self, spec: str) -> int:
        """Parse ``--class``: an integer index, or a class name when the model has names."""
        spec = spec.strip()
        if spec.lstrip("-").isdigit():
            index = int(spec)
        elif self.class_names and spec in self.class_names:
            index = self.class_names.index(spec)
        else:
            hint = ""
            if self.class_names:
                close = difflib.get_close_matches(spec, self.class_names, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
            else:
                hint = "; this model has no class names, so give an index"
            raise ModelError(f"unknown class {spec!r}{hint}")
        if not 0 <= index < self.num_classes:
            raise ModelError(
                f"class index {index} is out of range: the model has {self.num_classes} classes "
                f"(0..{self.num_classes - 1})"
            )
        return index

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for the run summary."""
        return {
            "source": self.source,
            "name": self.model.name,
            "input_size": list(self.input_size) if self.input_size else None,
            "channels": self.channels,
            "preprocess": self.preprocess_mode,
            "head": self.head,
            "num_classes": self.num_classes,
            "output": self.output_names[self.output_index] if self.output_names else None,
        }

    # -- layers -------------------------------------------------------------------------------

    def spatial_layers(self) -> list[LayerInfo]:
        """Layers with a 4-D output whose spatial size is > 1: the Grad-CAM candidates."""
        return [info for info in self.all_layers if info.is_spatial]

    def auto_layer(self) -> LayerInfo:
        """The last spatial layer: the automatic Grad-CAM target."""
        candidates = self.spatial_layers()
        if not candidates:
            raise ModelError(
                f"{self.source}: no layer with a spatial (4-D, more than 1x1) output, so "
                "Grad-CAM has nothing to look at; try `cnnvis occlusion`, which needs none"
            )
        return candidates[-1]

    def resolve_layer(self, name: str | None) -> LayerInfo:
        """Find ``--layer NAME`` by full path or by bare layer name; None picks automatically."""
        if name is None:
            return self.auto_layer()
        matches = [info for info in self.all_layers if name in (info.path, info.layer.name)]
        if len(matches) > 1:
            paths = ", ".join(info.path for info in matches)
            raise ModelError(f"layer name {name!r} is ambiguous ({paths}); give the full path")
        if not matches:
            names = [info.path for info in self.all_layers]
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise ModelError(
                f"no layer {name!r} in {self.source}{hint} (list them with `cnnvis layers`)"
            )
        info = matches[0]
        if not info.is_spatial:
            raise ModelError(
                f"layer {info.path!r} has output shape {info.output_shape}; Grad-CAM needs a 4-D "
                "output with spatial size > 1"
            )
        return info

    # -- computation (call inside a tf.function or eagerly) -------------------------------------

    def preprocess(self, raw: Any) -> Any:
        """Map raw 0..255 pixels to what the model expects (see ``preprocess.py``)."""
        from cnnvis_cli.preprocess import apply_preprocess

        return apply_preprocess(self.preprocess_mode, raw)

    def forward(self, raw: Any, feature_layer: LayerInfo | None = None) -> Forward:
        """Run the model on raw pixels, recording the feature layer and the pre-activation head."""
        tf, _ = tf_and_keras()
        with _Taps() as taps:
            if feature_layer is not None:
                taps.tap("features", feature_layer.layer)
            head = self.head_layer
            if self.head != "linear" and head is not None:
                if hasattr(head, "activation") and type(head).__name__ != "Activation":
                    taps.tap("logits", head, linear_head=True)
                else:  # Activation("softmax") / Softmax layer: its input is the logit
                    taps.tap("logits", head, record_input=True)
            outputs = self.model(self.preprocess(raw), training=False)
            if isinstance(outputs, dict):
                outputs = list(outputs.values())
            if isinstance(outputs, (list, tuple)):
                outputs = outputs[self.output_index]
            outputs = tf.cast(outputs, tf.float32)
            logits = tf.cast(taps.values.get("logits", outputs), tf.float32)
            features = taps.values.get("features")
        if feature_layer is not None and features is None:
            raise ModelError(f"layer {feature_layer.path!r} was not called in the forward pass")
        if self._binary:  # one sigmoid unit: class 1 scores z, class 0 scores -z
            logits = tf.concat([-logits, logits], axis=-1)
            outputs = tf.concat([1.0 - outputs, outputs], axis=-1)
        return Forward(features, logits, outputs)


def _read_class_names(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):  # {"0": "cat", ...}
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


def _custom_objects(path: Path) -> dict[str, Any]:
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


def _explain_load_error(path: Path, exc: Exception) -> ModelError:
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


def _load_saved_model(path: Path) -> Any:
    """Wrap a TensorFlow SavedModel directory as a forward-only Keras model."""
    tf, keras = tf_and_keras()
    try:
        with quiet_native_stderr():
            loaded = tf.saved_model.load(str(path))
            signature = loaded.signatures["serving_default"]
            spec = next(iter(signature.structured_input_signature[1].values()))
            layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    except Exception as exc:
        raise ModelError(f"{path}: cannot load the SavedModel ({exc})") from exc
    inputs = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype.name)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name=path.name)


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
    a TensorFlow SavedModel directory (forward passes only), or ``keras:NAME`` for a Keras
    application. Class names come from ``class_names`` (JSON list or one name per line), a
    ``<stem>.classes.json`` file beside the model, or ImageNet's for ``keras:`` models.
    """
    if preprocess not in PREPROCESS_MODES:
        raise ModelError(f"unknown --preprocess {preprocess!r}; use one of {PREPROCESS_MODES}")
    names = None
    forward_only = False
    if is_application(str(spec)):
        model, family_preprocess, names = load_application(str(spec), weights)
        source = str(spec)
        if preprocess == "auto":
            preprocess = family_preprocess
    else:
        path = Path(spec)
        source = str(path)
        if not path.exists():
            raise ModelError(f"model file not found: {path}")
        if path.is_dir() and (path / "saved_model.pb").is_file():
            model, forward_only = _load_saved_model(path), True
        elif path.is_dir() or path.suffix.lower() not in MODEL_SUFFIXES:
            raise ModelError(
                f"{path}: not a Keras model; cnnvis loads .keras and .h5 files, SavedModel "
                "directories and keras:NAME (save yours with model.save('model.keras'))"
            )
        else:
            _, keras = tf_and_keras()
            objects = _custom_objects(Path(custom_objects)) if custom_objects else None
            try:
                with quiet_native_stderr():
                    model = keras.saving.load_model(
                        path, compile=False, safe_mode=not unsafe, custom_objects=objects
                    )
            except Exception as exc:  # Keras raises many types for a bad file
                raise _explain_load_error(path, exc) from exc
        sidecar = sidecar_class_names(path)
        if class_names is None and sidecar is not None:
            class_names = sidecar
    if class_names is not None:
        names_path = Path(class_names)
        try:
            names = _read_class_names(names_path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{names_path}: cannot read class names ({exc})") from exc
    return ModelAdapter(
        model,
        source=source,
        class_names=names or None,
        preprocess=preprocess,
        output=output,
        forward_only=forward_only,
    )

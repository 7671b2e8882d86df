"""``ModelAdapter``: a loaded Keras model described the way the explanation methods need it.

It hides the differences between user models: where the input size and channel count come from,
which preprocessing the model expects (``preprocess.auto_preprocess``), which layers a class
activation map can be read from (found through nested models, keeping only those whose outputs
keep the image's axes: ``geometry.aligned_layers``), and how a class's logit and output are read
(``heads``). :meth:`ModelAdapter.forward` runs the model on raw pixels inside a compiled function,
capturing a feature layer and the head's logits.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cnnvis_cli.core.capture import Capture
from cnnvis_cli.core.geometry import aligned_layers
from cnnvis_cli.core.heads import Head, make_head
from cnnvis_cli.core.preprocess import apply_preprocess, auto_preprocess
from cnnvis_cli.errors import ModelError

FEATURES = "features"
EDITED = "edited"


@dataclass(frozen=True)
class LayerInfo:
    """A layer reachable from the model, with its slash-separated path through nested models."""

    path: str
    layer: Any
    class_name: str
    output_shape: tuple[int | None, ...] | None
    aligned: bool = True  # its output keeps the image's height and width axes

    @property
    def is_spatial(self) -> bool:
        """A 4-D output (batch, height, width, channels) with more than one spatial position."""
        shape = self.output_shape
        if shape is None or len(shape) != 4:
            return False
        height, width = shape[1], shape[2]
        return height is None or width is None or height * width > 1

    @property
    def is_cam_layer(self) -> bool:
        """Spatial and aligned with the image: a map read here can be laid over the image."""
        return self.is_spatial and self.aligned


@dataclass(frozen=True)
class Forward:
    """One forward pass: the captured features, per-class logits and per-class outputs."""

    features: Any  # (B, h, w, k) output of the captured layer (a tuple for several), or None
    logits: Any  # (B, C) scores before a final softmax / sigmoid
    outputs: Any  # (B, C) model outputs (probabilities for softmax / sigmoid heads)


def _output_shape(layer: Any) -> tuple[int | None, ...] | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return None


def _is_container(layer: Any) -> bool:
    return hasattr(layer, "layers") and isinstance(layer.layers, list) and bool(layer.layers)


def iter_layers(
    model: Any, prefix: str = "", aligned: set[int] | None = None
) -> Iterator[LayerInfo]:
    """Every non-container layer, depth-first in call order, through nested models."""
    aligned = aligned_layers(model) if aligned is None else aligned
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if _is_container(layer):
            yield from iter_layers(layer, prefix=f"{path}/", aligned=aligned)
        elif type(layer).__name__ != "InputLayer":
            shape = _output_shape(layer)
            yield LayerInfo(path, layer, type(layer).__name__, shape, id(layer) in aligned)


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


def _close(name: str, choices: list[str], n: int = 3) -> list[str]:
    """Near misses of ``name`` among ``choices``, ignoring case."""
    lowered = {c.lower(): c for c in choices}
    exact = [lowered[name.lower()]] if name.lower() in lowered else []
    near = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return list(dict.fromkeys(exact + [lowered[c] for c in near]))[:n]


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
        preprocess_reason: str | None = None,
    ) -> None:
        self.model = model
        self.source = source
        self.forward_only = forward_only
        inputs = list(getattr(model, "inputs", None) or [])
        if len(inputs) > 1:
            raise ModelError(
                f"{source}: the model has {len(inputs)} inputs; cnnvis explains models with one "
                "image input"
            )
        shape = tuple(inputs[0].shape) if inputs else None
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
        if preprocess == "auto":
            self.preprocess_mode, self.preprocess_reason = auto_preprocess(model)
        else:
            self.preprocess_mode = preprocess
            self.preprocess_reason = preprocess_reason or "set with --preprocess"
        self.output_names = _output_names(model)
        self.output_index = self._resolve_output(output)
        out_shape = tuple(model.outputs[self.output_index].shape)
        if len(out_shape) != 2:
            raise ModelError(
                f"{source}: output {self.output_names[self.output_index]!r} has shape "
                f"{out_shape}; cnnvis explains classifiers with a (batch, classes) output"
            )
        units = int(out_shape[-1]) if out_shape[-1] else 1
        self.score_head: Head = make_head(_head_layer(model, self.output_index), units)
        self.num_classes = self.score_head.num_classes
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
    def head(self) -> str:
        """The head's kind: ``softmax``, ``sigmoid`` or ``linear``."""
        return self.score_head.kind

    @property
    def head_layer(self) -> Any:
        return self.score_head.layer

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) the model expects, or None when the input size is dynamic."""
        if self.input_height is None or self.input_width is None:
            return None
        return int(self.input_height), int(self.input_width)

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
            raise ModelError(f"unknown class {spec!r}{self._class_hint(spec)}")
        if not 0 <= index < self.num_classes:
            raise ModelError(
                f"class index {index} is out of range: the model has {self.num_classes} classes "
                f"(0..{self.num_classes - 1})"
            )
        return index

    def _class_hint(self, spec: str) -> str:
        if not self.class_names:
            return (
                "; this model has no class names, so give an index (or name them with "
                "--class-names FILE)"
            )
        close = _close(spec, self.class_names)
        if close:
            return f"; did you mean {', '.join(close)}?"
        shown = ", ".join(self.class_names[:8])
        more = f" and {len(self.class_names) - 8} more" if len(self.class_names) > 8 else ""
        return f"; the model's classes are {shown}{more}"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for the run summary."""
        return {
            "source": self.source,
            "name": self.model.name,
            "input_size": list(self.input_size) if self.input_size else None,
            "channels": self.channels,
            "preprocess": self.preprocess_mode,
            "preprocess_reason": self.preprocess_reason,
            "head": self.head,
            "num_classes": self.num_classes,
            "output": self.output_names[self.output_index] if self.output_names else None,
        }

    # -- layers -------------------------------------------------------------------------------

    def spatial_layers(self) -> list[LayerInfo]:
        """Layers a class activation map can be read from: spatial and aligned with the image."""
        return [info for info in self.all_layers if info.is_cam_layer]

    def auto_layer(self) -> LayerInfo:
        """The last such layer in call order: the automatic Grad-CAM target."""
        candidates = self.spatial_layers()
        if not candidates:
            raise ModelError(
                f"{self.source}: no layer with a spatial (4-D, more than 1x1) output aligned "
                "with the image, so Grad-CAM has nothing to look at; try `cnnvis occlusion`, "
                "which needs none"
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
            close = _close(name, [info.path for info in self.all_layers])
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
        if not info.aligned:
            raise ModelError(
                f"layer {info.path!r} comes after a layer that reorders or reshapes the image's "
                "axes (Permute, Reshape, Lambda or a custom layer), so its map would not line up "
                "with the image; choose a layer before it (`cnnvis layers` marks the usable ones)"
            )
        return info

    # -- computation (inside a compiled function) ----------------------------------------------

    def preprocess(self, raw: Any) -> Any:
        """Map raw 0..255 pixels to what the model expects (see ``core/preprocess.py``)."""
        return apply_preprocess(self.preprocess_mode, raw)

    def model_output(self, inputs: Any) -> Any:
        """The chosen output of the model for preprocessed ``inputs``."""
        outputs = self.model(inputs, training=False)
        if isinstance(outputs, dict):
            outputs = list(outputs.values())
        if isinstance(outputs, (list, tuple)):
            outputs = outputs[self.output_index]
        return outputs

    def forward(
        self,
        raw: Any,
        feature_layer: LayerInfo | Sequence[LayerInfo] | None = None,
        tape: Any = None,
        *,
        preprocessed: bool = False,
        edit: tuple[LayerInfo, Callable[[Any], Any]] | None = None,
    ) -> Forward:
        """Run the model on raw pixels: features of ``feature_layer``, logits and outputs.

        ``feature_layer``: one layer (``features`` is its output) or a sequence of layers
        (``features`` is a tuple, in the same order). ``tape`` (a ``tf.GradientTape``) watches
        the captured features, so gradients with respect to them need no watched weights.
        ``preprocessed``: ``raw`` is already a model input. ``edit = (layer, transform)``
        replaces that layer's output by ``transform(output)`` during this pass (the model itself
        is left unchanged).
        """
        several = isinstance(feature_layer, (list, tuple))
        layers = list(feature_layer) if several else [feature_layer] if feature_layer else []
        with Capture(tape) as capture:
            if edit is not None:
                capture.replace(EDITED, edit[0].layer, edit[1], edit[0].path)
            for number, info in enumerate(layers):
                capture.output(f"{FEATURES}{number}", info.layer, info.path)
            self.score_head.attach(capture)
            inputs = raw if preprocessed else self.preprocess(raw)
            outputs = self.model_output(inputs)
            logits, outputs = self.score_head.scores(outputs, capture)
            found = tuple(capture[f"{FEATURES}{n}"] for n in range(len(layers)))
        features = found if several else (found[0] if found else None)
        return Forward(features, logits, outputs)

    def outputs(self, raw: Any) -> Any:
        """(B, C) float32 model outputs for raw pixels (probabilities for softmax heads)."""
        return self.forward(raw).outputs

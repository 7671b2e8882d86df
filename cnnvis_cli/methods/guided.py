"""Guided back-propagation and guided Grad-CAM: fine-grained, signed input gradients.

Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR workshop 2015
(guided back-propagation); Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks
via Gradient-based Localization", ICCV 2017 (guided Grad-CAM).

The map is the gradient of the class score y^c (the logit, before a softmax or sigmoid) with
respect to the raw input pixels, except that every ReLU ``f(x) = max(x, 0)`` back-propagates
only positive gradients at positive inputs. For an upstream gradient g = dy^c / df::

    plain backprop:   dy^c/dx = [x > 0] * g
    guided backprop:  dy^c/dx = [x > 0] * [g > 0] * g

A clipped or thresholded ReLU (``ReLU(max_value=6)``, ``relu6``, ``ReLU(threshold=t)``) passes
gradient only on its linear part: ``[t < x < max_value] * [g > 0] * g``. A ReLU with a negative
slope (leaky ReLU), PReLU, ELU, swish/SiLU, GELU, tanh and other hidden nonlinearities are left
unguided (their ordinary gradient is used); their paths are reported in ``unguided_layers``.

Guided Grad-CAM is the element-wise product of the guided gradient (h x w x c) and the Grad-CAM
map of the same class, upsampled bilinearly to the input resolution and broadcast over channels::

    G^c = guided(dy^c/dx) * upsample(L^c_Grad-CAM)

Both maps are signed h x w x c arrays and are not normalised (the renderer centres them on grey).

The ReLUs are guided without touching the user's model for good: while the compiled function is
traced, each ReLU activation (``layer.activation``) or ``ReLU`` layer ``call`` is temporarily
replaced by a wrapper that calls the original function (so forward values are unchanged) under a
``tf.custom_gradient`` with the guided backward pass, and restored afterwards
(:class:`SwappedReLUs`; DeconvNet reuses it with another backward rule, ``deconvnet.py``).

Guided Grad-CAM's Grad-CAM factor takes every ``--layer`` given (several: their maps averaged,
see ``cam.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from cnnvis_cli.core.adapter import LayerInfo, ModelAdapter
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.base import BatchMethod
from cnnvis_cli.methods.cam import CAMOptions, LayerOptions, layer_params
from cnnvis_cli.methods.gradcam import GradCAM
from cnnvis_cli.methods.gradients import logit_gradients
from cnnvis_cli.options import Options

GUIDED_ACTIVATIONS: dict[str, float | None] = {"relu": None, "relu6": 6.0}  # name -> max value
"""Activation functions (by ``__name__``) that are guided, with their clipping value."""

TRANSPARENT_ACTIVATIONS = frozenset({"linear", "softmax", "sigmoid"})
"""Activations that need no guiding (identity, or a squashing head / gate)."""

UNGUIDED_LAYER_CLASSES = frozenset({"LeakyReLU", "PReLU", "ELU"})
"""Activation layers that are nonlinear but not a ReLU: reported, left unguided."""

_MISSING = object()


@dataclass(frozen=True)
class _Gate:
    """One ReLU to guide: ``layer.<attribute>`` is the function (or call) to wrap."""

    layer: Any
    attribute: str  # "activation" or "call"
    threshold: float
    max_value: float | None


def _relu_layer_gate(layer: Any) -> tuple[float, float | None] | None:
    """(threshold, max_value) of a Keras ``ReLU`` layer, or None if it is leaky."""
    if float(getattr(layer, "negative_slope", 0.0) or 0.0) != 0.0:
        return None
    max_value = getattr(layer, "max_value", None)
    threshold = float(getattr(layer, "threshold", 0.0) or 0.0)
    return threshold, None if max_value is None else float(max_value)


def _classify_activation(function: Any) -> tuple[str, tuple[float, float | None] | None]:
    """("guided", gate) / ("transparent", None) / ("unguided", None) for an activation."""
    if function is None or not callable(function):
        return "transparent", None
    if type(function).__name__ == "ReLU" and hasattr(function, "max_value"):  # a layer instance
        gate = _relu_layer_gate(function)
        return ("guided", gate) if gate is not None else ("unguided", None)
    name = getattr(function, "__name__", None)
    if name in GUIDED_ACTIVATIONS:
        return "guided", (0.0, GUIDED_ACTIVATIONS[name])
    if name in TRANSPARENT_ACTIVATIONS:
        return "transparent", None
    return "unguided", None


def plan_guided_relus(layers: list[LayerInfo], head: Any = None) -> tuple[list[_Gate], list[str]]:
    """The ReLUs to guide and the paths of hidden layers with other nonlinearities.

    ``head`` (the layer producing the model's output) is never reported as unguided: its
    activation is the output's, not a hidden nonlinearity.
    """
    gates: list[_Gate] = []
    unguided: list[str] = []
    seen: set[int] = set()
    for info in layers:
        layer = info.layer
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if info.class_name == "ReLU":
            gate = _relu_layer_gate(layer)
            if gate is not None:
                gates.append(_Gate(layer, "call", *gate))
            elif layer is not head:
                unguided.append(info.path)
            continue
        if info.class_name in UNGUIDED_LAYER_CLASSES:
            if layer is not head:
                unguided.append(info.path)
            continue
        if not hasattr(layer, "activation"):
            continue
        kind, gate = _classify_activation(layer.activation)
        if kind == "guided" and gate is not None:
            gates.append(_Gate(layer, "activation", *gate))
        elif kind == "unguided" and layer is not head:
            unguided.append(info.path)
    return gates, unguided


BackwardRule = Callable[[Any, Any, _Gate], Any]
"""A ReLU's replacement backward pass: (forward input x, upstream gradient g, gate) -> dx."""


def guided_rule(x: Any, upstream: Any, gate: _Gate) -> Any:
    """Guided back-propagation: [t < x < max_value] * [g > 0] * g."""
    tf, _ = tf_and_keras()
    keep = tf.logical_and(x > tf.cast(gate.threshold, x.dtype), upstream > 0)
    if gate.max_value is not None:
        keep = tf.logical_and(keep, x < tf.cast(gate.max_value, x.dtype))
    return upstream * tf.cast(keep, upstream.dtype)


def _swapped(function: Callable[..., Any], gate: _Gate, rule: BackwardRule) -> Any:
    """Wrap ``function`` (a ReLU): same forward values, ``rule`` as its backward pass."""

    def swapped(inputs: Any, *args: Any, **kwargs: Any) -> Any:
        tf, _ = tf_and_keras()

        @tf.custom_gradient
        def apply(x: Any) -> Any:
            def backward(upstream: Any) -> Any:
                return rule(x, upstream, gate)

            return function(x, *args, **kwargs), backward

        return apply(tf.convert_to_tensor(inputs))

    return swapped


def unguided_note(paths: list[str]) -> list[str]:
    """The run note listing hidden layers whose nonlinearity is not a ReLU."""
    if not paths:
        return []
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    return [
        f"{len(paths)} layer(s) with a non-ReLU nonlinearity are back-propagated unguided: {shown}"
    ]


class SwappedReLUs:
    """Context manager: give each gate's ReLU the backward pass ``rule``, restore on exit."""

    def __init__(self, gates: list[_Gate], rule: BackwardRule) -> None:
        self._gates = gates
        self._rule = rule
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> SwappedReLUs:
        try:
            for gate in self._gates:
                layer, attribute = gate.layer, gate.attribute
                original = getattr(layer, attribute)
                self._saved.append((layer, attribute, layer.__dict__.get(attribute, _MISSING)))
                wrapper = _swapped(original, gate, self._rule)
                object.__setattr__(layer, attribute, wrapper)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _restore(self) -> None:
        for layer, attribute, saved in reversed(self._saved):
            if saved is _MISSING:
                if attribute in layer.__dict__:
                    object.__delattr__(layer, attribute)
            else:
                object.__setattr__(layer, attribute, saved)
        self._saved.clear()


class GuidedBackprop(BatchMethod):
    """Guided back-propagation: signed input gradients through guided ReLUs."""

    name = "guided"
    title = "Guided backprop"
    kind = "gradient"
    rule: ClassVar[BackwardRule] = staticmethod(guided_rule)

    def __init__(self, adapter: ModelAdapter, options: Options | None = None, **kwargs: Any):
        self._gates, self.unguided_layers = plan_guided_relus(
            adapter.all_layers, adapter.head_layer
        )
        super().__init__(adapter, options, **kwargs)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "unguided_layers": list(self.unguided_layers)}

    def notes(self) -> list[str]:
        return unguided_note(self.unguided_layers)

    def guided_gradients(self, raw: Any, targets: Any = None) -> tuple[Any, dict[str, Any]]:
        """Guided gradients (B, K, h, w, c) and the chosen targets; ``targets`` (B, K) fixes the
        classes (guided Grad-CAM passes Grad-CAM's), None selects them from this pass."""
        gradients, targets, forward = logit_gradients(
            self.adapter,
            raw,
            (lambda f: self.targets.select(f.outputs)) if targets is None else (lambda _: targets),
            self.top_k,
            context=SwappedReLUs(self._gates, type(self).rule),
        )
        return gradients, self.chosen(forward, targets)

    def compute(self, raw: Any) -> dict[str, Any]:
        gradients, chosen = self.guided_gradients(raw)
        return {"maps": gradients, **chosen}


class GuidedGradCAM(BatchMethod):
    """Guided Grad-CAM: guided gradients weighted by the upsampled Grad-CAM map of ``layer``."""

    name = "guided-gradcam"
    title = "Guided Grad-CAM"
    kind = "gradient"
    options_type = LayerOptions

    def __init__(self, adapter: ModelAdapter, options: LayerOptions | None = None, **kwargs: Any):
        layers = options.layer if options is not None else None
        self.gradcam = GradCAM(adapter, CAMOptions(layer=layers), **kwargs)
        self.guided = GuidedBackprop(adapter, **kwargs)
        self.layer = self.gradcam.layer
        self.unguided_layers = self.guided.unguided_layers
        super().__init__(adapter, options, **kwargs)

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "layer": layer_params(self.gradcam.layers),
            "unguided_layers": list(self.unguided_layers),
        }

    def notes(self) -> list[str]:
        return unguided_note(self.unguided_layers)

    def compute(self, raw: Any) -> dict[str, Any]:
        """Guided Grad-CAM maps (B, K, h, w, c) and Grad-CAM's targets."""
        tf, _ = tf_and_keras()
        raw = tf.convert_to_tensor(raw, tf.float32)
        cam = self.gradcam.compute(raw)  # (B, K, h', w'), ordinary gradients
        guided, _ = self.guided.guided_gradients(raw, cam["targets"])  # the same classes
        size = tf.shape(raw)[1:3]
        cams = tf.image.resize(tf.transpose(cam["maps"], (0, 2, 3, 1)), size, method="bilinear")
        cams = tf.transpose(cams, (0, 3, 1, 2))[..., tf.newaxis]  # (B, K, h, w, 1)
        return {**cam, "maps": guided * tf.cast(cams, guided.dtype)}

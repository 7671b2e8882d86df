"""Score heads: how a class's *logit* and *output* are read from a model.

Gradient methods differentiate the logit — the score before a final softmax or sigmoid, since a
saturated probability has a vanishing gradient (Selvaraju et al., 2017) — while perturbation
methods and the summary report the model's output (a probability for softmax and sigmoid heads).
A head object knows where each comes from, in the spirit of pytorch-grad-cam's
``utils/model_targets.py``:

=================== ================================== ======================================
head                logits (B, C)                      outputs (B, C)
=================== ================================== ======================================
``LinearHead``      the model output y                 y
``SoftmaxHead``     the head layer's pre-activation z  softmax(z), the model output
``SigmoidHead``     z (multi-label: one sigmoid each)  sigmoid(z)
``BinaryHead``      [-z, z] for one sigmoid unit       [1 - p, p]
=================== ================================== ======================================

``z`` is read by a capture on the head layer: its pre-activation output for a layer with an
``activation`` (Dense, Conv), or its input for an ``Activation``/``Softmax`` layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.capture import Capture
from cnnvis_cli.core.tf import tf_and_keras

LOGITS = "logits"
SCORE_ACTIVATIONS = ("softmax", "sigmoid")


def activation_name(layer: Any) -> str | None:
    """The name of a layer's activation (``softmax`` for a Softmax layer), if any."""
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None)


@dataclass(frozen=True)
class Head:
    """A linear head: the model's output is its own logit."""

    layer: Any
    units: int
    kind: str = "linear"

    @property
    def num_classes(self) -> int:
        return self.units

    def attach(self, capture: Capture) -> None:
        """Capture what :meth:`scores` needs during the forward pass."""

    def scores(self, outputs: Any, capture: Capture) -> tuple[Any, Any]:
        """(logits, outputs), both (B, C) float32, for the model's (B, units) output."""
        tf, _ = tf_and_keras()
        outputs = tf.cast(outputs, tf.float32)
        return outputs, outputs

    def class_outputs(self, outputs: np.ndarray) -> np.ndarray:
        """(n, C) per-class outputs from the model's (n, units) output, in NumPy."""
        return np.asarray(outputs, dtype=np.float64)

    def _logits(self, capture: Capture) -> Any:
        tf, _ = tf_and_keras()
        return tf.cast(capture[LOGITS], tf.float32)

    def _attach_logits(self, capture: Capture) -> None:
        layer = self.layer
        if hasattr(layer, "activation") and type(layer).__name__ != "Activation":
            capture.pre_activation(LOGITS, layer)
        else:  # Activation("softmax") or Softmax layer: its input is the logit
            capture.input(LOGITS, layer)


LinearHead = Head


@dataclass(frozen=True)
class SoftmaxHead(Head):
    """A softmax head: logits from the head layer's pre-activation output."""

    kind: str = "softmax"

    def attach(self, capture: Capture) -> None:
        self._attach_logits(capture)

    def scores(self, outputs: Any, capture: Capture) -> tuple[Any, Any]:
        tf, _ = tf_and_keras()
        return self._logits(capture), tf.cast(outputs, tf.float32)


@dataclass(frozen=True)
class SigmoidHead(SoftmaxHead):
    """Several independent sigmoid units (multi-label): each unit's logit is its score."""

    kind: str = "sigmoid"


@dataclass(frozen=True)
class BinaryHead(SoftmaxHead):
    """One sigmoid unit as two classes: class 1 scores z, class 0 scores -z."""

    kind: str = "sigmoid"

    @property
    def num_classes(self) -> int:
        return 2

    def class_outputs(self, outputs: np.ndarray) -> np.ndarray:
        probability = np.asarray(outputs, dtype=np.float64)
        return np.concatenate([1.0 - probability, probability], axis=-1)

    def scores(self, outputs: Any, capture: Capture) -> tuple[Any, Any]:
        tf, _ = tf_and_keras()
        logits = self._logits(capture)
        probability = tf.cast(outputs, tf.float32)
        return tf.concat([-logits, logits], axis=-1), tf.concat(
            [1.0 - probability, probability], axis=-1
        )


def make_head(layer: Any, units: int) -> Head:
    """The head object for the layer producing a (batch, units) output."""
    name = activation_name(layer) if layer is not None else None
    if name == "softmax":
        return SoftmaxHead(layer, units)
    if name == "sigmoid":
        return BinaryHead(layer, units) if units == 1 else SigmoidHead(layer, units)
    return Head(layer, units)

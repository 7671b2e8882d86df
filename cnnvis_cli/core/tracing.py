"""Compiled functions that remember what they traced.

Every computation cnnvis differentiates runs inside a ``tf.function`` (never eagerly): on some
Intel CPUs oneDNN's eager back-propagation of a 1x1 stride-2 convolution's *filter* corrupts the
heap, and a traced function prunes the filter gradients nobody asked for. :class:`Compiled` keeps
the graphs it traced, so tests (and anyone curious) can check which operations actually run:
:func:`executed_op_types` lists the ops the function's outputs depend on — the part of the graph
TensorFlow keeps after pruning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from cnnvis_cli.core.tf import tf_and_keras

WEIGHT_GRADIENT_OPS = frozenset(
    {"Conv2DBackpropFilter", "DepthwiseConv2dNativeBackpropFilter", "Conv3DBackpropFilterV2"}
)
"""Ops that differentiate a convolution's weights: explanations never need them."""


class Compiled:
    """``tf.function(function)`` (traced once per input signature) that records its graphs.

    AutoGraph is off: the functions use TensorFlow ops for data-dependent choices (``tf.where``,
    ``tf.map_fn``) and plain Python only for what is fixed at trace time, so converting them is
    pure overhead (it took ~12 % of a MobileNetV2 Grad-CAM's trace here, which is most of a
    one-image run's start-up after TensorFlow's import).
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        tf, _ = tf_and_keras()
        self.python_function = function
        self.graphs: list[Any] = []
        self._function = tf.function(self._trace, reduce_retracing=True, autograph=False)

    def _trace(self, *args: Any) -> Any:
        tf, _ = tf_and_keras()
        self.graphs.append(tf.compat.v1.get_default_graph())  # the FuncGraph being built
        return self.python_function(*args)

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)

    @property
    def traces(self) -> int:
        """How many times the function was traced (one per input signature)."""
        return len(self.graphs)


def executed_op_types(graph: Any) -> set[str]:
    """Types of the ops that the traced function's outputs depend on (what runs after pruning)."""
    pending = [tensor.op for tensor in graph.outputs]
    pending += list(getattr(graph, "control_outputs", []) or [])
    seen: set[int] = set()
    types: set[str] = set()
    while pending:
        op = pending.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        types.add(op.type)
        pending.extend(tensor.op for tensor in op.inputs)
        pending.extend(op.control_inputs)
    return types


def weight_gradient_ops(functions: Iterable[Compiled]) -> set[str]:
    """Weight-gradient op types that would run in any graph the functions traced."""
    found: set[str] = set()
    for function in functions:
        for graph in function.graphs:
            found |= executed_op_types(graph) & WEIGHT_GRADIENT_OPS
    return found

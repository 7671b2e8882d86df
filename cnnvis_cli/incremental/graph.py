"""Flatten a Keras 3 model into a topologically ordered plan of layer applications.

Incremental inference (Nakandala, Kumar & Papakonstantinou, SIGMOD 2019, section 3) needs the
network as a DAG of operators whose inputs and outputs can be cached and re-computed one at a
time. A Keras 3 functional model already is such a DAG: every ``Functional`` keeps its nodes by
depth (``_nodes_by_depth``), each ``Node`` knows its ``operation``, its symbolic
``input_tensors`` / ``outputs`` and how they were passed (``node.arguments``). A nested model
(a ``Functional`` or a ``Sequential`` backbone called on a tensor) is one node of its parent;
we expand it in place, aliasing its symbolic inputs to the parent's tensors, so the plan is flat
and every step is a call of one of the user's own layer objects. Nothing in the model is
modified: the plan only holds references.

A ``Sequential`` model is walked through the functional graph Keras builds for it
(``_functional``) when its input shape is known, else as the chain of its layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cnnvis_cli.incremental.errors import UnsupportedModel


@dataclass(frozen=True)
class Value:
    """A tensor of the plan: ``shape`` includes the batch axis (None); ``dtype`` a string."""

    id: int
    shape: tuple[int | None, ...]
    dtype: str

    @property
    def spatial(self) -> bool:
        """A 4-D (batch, height, width, channels) tensor with a known spatial size."""
        return len(self.shape) == 4 and self.shape[1] is not None and self.shape[2] is not None


@dataclass(frozen=True, eq=False)
class Step:
    """One application of ``op`` (a layer of the user's model) in the flattened plan.

    ``inputs`` / ``outputs`` are value ids, in the order of the node's flattened symbolic
    ``input_tensors`` / ``outputs``; ``input_keys`` are the ``id()`` of those symbolic input
    tensors, which ``node.arguments.fill_in`` uses to rebuild the call's arguments.
    """

    index: int
    path: str
    op: Any
    node: Any
    inputs: tuple[int, ...]
    input_keys: tuple[int, ...]
    outputs: tuple[int, ...]

    @property
    def class_name(self) -> str:
        return type(self.op).__name__

    def apply(self, tensors: Sequence[Any]) -> list[Any]:
        """Call the layer on concrete tensors (one per input) at inference; flat outputs."""
        from keras import layers, tree

        if self.node is None:  # a layer of a Sequential chain: one positional input
            args: tuple[Any, ...] = (tensors[0],)
            kwargs: dict[str, Any] = {}
        else:
            args, kwargs = self.node.arguments.fill_in(
                dict(zip(self.input_keys, tensors, strict=True))
            )
            args = tuple(args)
            kwargs = dict(kwargs)
        if isinstance(self.op, layers.Layer):
            kwargs["training"] = False
        return list(tree.flatten(self.op(*args, **kwargs)))


@dataclass
class Plan:
    """The flat plan from the model input to one chosen output."""

    values: dict[int, Value]
    steps: list[Step]
    input: int
    output: int
    consumers: dict[int, list[Step]] = field(default_factory=dict)

    def value(self, vid: int) -> Value:
        return self.values[vid]

    def run(self, x: Any, timings: list[tuple[Step, float]] | None = None) -> dict[int, Any]:
        """Every value of the plan for the input batch ``x`` (the layers called as Keras would,
        at inference): the cache of incremental inference. Eagerly, ``timings`` collects the
        seconds of each step (for profiles)."""
        import time

        values = {self.input: x}
        for step in self.steps:
            start = time.perf_counter()
            outs = step.apply([values[v] for v in step.inputs])
            if timings is not None:
                _ = [getattr(out, "numpy", lambda: None)() for out in outs]
                timings.append((step, time.perf_counter() - start))
            for vid, out in zip(step.outputs, outs, strict=True):
                values[vid] = out
        return values

    def with_shapes(self, values: dict[int, Any]) -> Plan:
        """A copy whose value shapes are those of concrete tensors (batch axis left None)."""
        shapes = {
            vid: Value(vid, (None, *(int(d) for d in values[vid].shape[1:])), v.dtype)
            if vid in values
            else v
            for vid, v in self.values.items()
        }
        return Plan(shapes, self.steps, self.input, self.output, self.consumers)

    @property
    def static(self) -> bool:
        """Every value has a known shape apart from the batch axis."""
        return all(None not in v.shape[1:] for v in self.values.values())


def _graph_of(model: Any) -> Any:
    """The functional graph of a model, or None (a deferred Sequential, a subclassed model)."""
    if hasattr(model, "_nodes_by_depth") and hasattr(model, "_run_through_graph"):
        return model
    functional = getattr(model, "_functional", None)
    if functional is not None and hasattr(functional, "_nodes_by_depth"):
        return functional
    return None


def _is_sequential(model: Any) -> bool:
    from keras import Sequential

    return isinstance(model, Sequential)


def _expandable(op: Any, node: Any) -> bool:
    """A nested model we can inline: functional (or a Sequential) with matching inputs."""
    from keras import Model

    if not isinstance(op, Model):
        return False
    graph = _graph_of(op)
    if graph is not None:
        return len(graph.inputs) == len(node.input_tensors)
    return _is_sequential(op) and len(node.input_tensors) == 1 and bool(op.layers)


class _Builder:
    def __init__(self) -> None:
        self.values: dict[int, Value] = {}
        self.steps: list[Step] = []

    def new_value(self, tensor: Any) -> int:
        vid = len(self.values)
        shape = tuple(None if d is None else int(d) for d in tensor.shape)
        self.values[vid] = Value(vid, shape, str(tensor.dtype))
        return vid

    def add_step(self, path: str, op: Any, node: Any, inputs, keys, out_tensors) -> list[int]:
        outputs = [self.new_value(t) for t in out_tensors]
        step = Step(len(self.steps), path, op, node, tuple(inputs), tuple(keys), tuple(outputs))
        self.steps.append(step)
        return outputs

    def expand(self, model: Any, prefix: str, inputs: list[int]) -> list[int]:
        """Append the steps of ``model`` fed by value ids ``inputs``; its output value ids."""
        graph = _graph_of(model)
        if graph is None:
            return self._expand_chain(model, prefix, inputs)
        alias: dict[int, int] = {id(t): v for t, v in zip(graph.inputs, inputs, strict=True)}
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                op = node.operation
                if op is None or node.is_input:
                    continue
                tensors = list(node.input_tensors)
                if any(id(t) not in alias for t in tensors):
                    continue  # not computable from the inputs (as Keras itself skips it)
                vids = [alias[id(t)] for t in tensors]
                path = f"{prefix}{op.name}"
                if _expandable(op, node):
                    outs = self.expand(op, f"{path}/", vids)
                else:
                    outs = self.add_step(
                        path, op, node, vids, [id(t) for t in tensors], node.outputs
                    )
                for t, v in zip(node.outputs, outs, strict=True):
                    alias[id(t)] = v
        return [alias[id(t)] for t in graph.outputs]

    def _expand_chain(self, model: Any, prefix: str, inputs: list[int]) -> list[int]:
        """A Sequential without a functional graph: its layers in order, one input each."""
        if not _is_sequential(model):
            raise UnsupportedModel(prefix.rstrip("/") or model.name, type(model).__name__)
        current = inputs[0]
        for layer in model.layers:
            path = f"{prefix}{layer.name}"
            if _is_sequential(layer) or _graph_of(layer) is not None:
                current = self.expand(layer, f"{path}/", [current])[0]
                continue
            value = self.values[current]
            out = layer.compute_output_spec(_spec(value))
            current = self.add_step(path, layer, None, [current], [0], [out])[0]
        return [current]


def _spec(value: Value) -> Any:
    from keras import KerasTensor

    return KerasTensor(value.shape, dtype=value.dtype)


def build_plan(model: Any, output_index: int = 0) -> Plan:
    """The plan of ``model`` from its (single, 4-D) input to ``model.outputs[output_index]``.

    Steps not needed for the chosen output are pruned. Raises ``UnsupportedModel`` for a model
    with several inputs or one that is not a functional graph at all (a subclassed model).
    """
    inputs = list(getattr(model, "inputs", None) or [])
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = [tuple(t.shape) for t in inputs]
        raise UnsupportedModel(model.name, f"{type(model).__name__} with inputs {shapes}")
    builder = _Builder()
    source = builder.new_value(inputs[0])
    outputs = builder.expand(model, "", [source])
    if not 0 <= output_index < len(outputs):
        raise ValueError(f"output_index {output_index} out of range ({len(outputs)} outputs)")
    target = outputs[output_index]
    needed = {target}
    kept: list[Step] = []
    for step in reversed(builder.steps):
        if needed.intersection(step.outputs):
            kept.append(step)
            needed.update(step.inputs)
    kept.reverse()
    steps = [
        Step(i, s.path, s.op, s.node, s.inputs, s.input_keys, s.outputs) for i, s in enumerate(kept)
    ]
    consumers: dict[int, list[Step]] = {}
    for step in steps:
        for vid in step.inputs:
            consumers.setdefault(vid, []).append(step)
    return Plan(builder.values, steps, source, target, consumers)

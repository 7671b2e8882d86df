"""Window rules: how a change confined to a window of a layer's input moves to its output.

Krypton (Nakandala, Kumar & Papakonstantinou, SIGMOD 2019, section 3.2) propagates an
"update patch" through each layer: for a layer sliding a kernel of (dilated) extent ``k`` with
stride ``s`` over an input padded by ``pad_before`` (one spatial axis; the two axes are
independent), output index ``o`` reads padded input indices ``[o s, o s + k)``. A change on
input indices ``[a, b]`` (unpadded) therefore reaches exactly the outputs

    o_lo = ceil((a + pad_before - k + 1) / s),   o_hi = floor((b + pad_before) / s)

clamped to the output, and recomputing output window ``[o0, o0 + h)`` needs the padded input
rows ``[o0 s, (o0 + h - 1) s + k)`` — the window plus its halo. Every spatial layer below is
described by one ``Axis(kernel, stride, pad_before, pad_after)`` per spatial axis and per input
(``Operand``); a negative pad is a crop (``Cropping2D``). The window itself is computed with the
layer's own weights and a 'valid' operation on the pre-padded input, which reproduces 'same'
zero padding (or -inf for max pooling, or the valid-element count for average pooling).

Kinds of rules:

* ``identity`` (Dropout & co. at inference): the window passes through unchanged.
* ``pointwise`` (batch normalization, activations, rescaling, 1x1 stride-1 convolutions): the
  layer is called on the window itself; output window = input window.
* ``window`` (convolutions, pooling, padding, cropping, element-wise merges of same-shaped maps,
  channel concatenation): gather each input over the output window's halo, compute.
* ``gap`` (GlobalAveragePooling2D): exact incremental mean,
  ``(S - sum_window(cached) + sum_window(new)) / (H W)`` with ``S`` the cached total.
* ``head``: layers on vectors (after global pooling or a fall-back): computed per position as
  Keras computes them, not a fall-back.
* ``dense``: supported, but computed on the full map with the windows pasted in
  (GlobalMaxPooling2D); ``unsupported``: no rule (Flatten, Dense on a map, Reshape, Lambda,
  custom layers, broadcast products such as a squeeze-excite gate) — from here on the rest of
  the graph runs on full maps (the fall-back of the paper).

``macs`` is the number of multiply-accumulates per output spatial position (all channels); it
feeds the cost estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.incremental.graph import Plan, Step

IDENTITY = "identity"
POINTWISE = "pointwise"
WINDOW = "window"
GAP = "gap"
DENSE = "dense"
HEAD = "head"
UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class Axis:
    """Geometry along one spatial axis: output ``o`` reads padded input ``[o s, o s + k)``."""

    kernel: int = 1
    stride: int = 1
    pad_before: int = 0
    pad_after: int = 0


POINT = Axis()


@dataclass(frozen=True, eq=False)
class Operand:
    """One input of a window rule: a plan value, or a constant map (``constant()`` returns a
    (1, H, W, C) array, read when the engine is prepared), gathered with ``rows``/``cols``
    geometry; the padding holds ``pad_value``."""

    value: int | None
    rows: Axis = POINT
    cols: Axis = POINT
    pad_value: float = 0.0
    constant: Callable[[], np.ndarray] | None = None


@dataclass(frozen=True, eq=False)
class Rule:
    kind: str
    operands: tuple[Operand, ...] = ()
    compute: Callable[[list[Any]], Any] | None = None
    macs: int = 0
    reason: str = ""


def _same_pads(size_in: int, size_out: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding: total = max((out - 1) s + k - in, 0), before = total // 2."""
    total = max((size_out - 1) * stride + kernel - size_in, 0)
    return total // 2, total - total // 2


def _axes(step: Step, plan: Plan, kernel, stride, dilation, padding: str) -> tuple[Axis, Axis]:
    shape_in = plan.values[step.inputs[0]].shape
    shape_out = plan.values[step.outputs[0]].shape
    axes = []
    for i in range(2):
        extent = (int(kernel[i]) - 1) * int(dilation[i]) + 1
        if padding == "same":
            before, after = _same_pads(shape_in[1 + i], shape_out[1 + i], extent, int(stride[i]))
        else:
            before, after = 0, 0
        axes.append(Axis(extent, int(stride[i]), before, after))
    return axes[0], axes[1]


def _is(op: Any, cls: Any) -> bool:
    """``op`` is an instance of the Keras class ``cls`` whose ``call`` was not overridden."""
    return cls is not None and isinstance(op, cls) and type(op).call is cls.call


def _channels(plan: Plan, vid: int) -> int:
    return int(plan.values[vid].shape[-1] or 1)


def _cast(tensor: Any, dtype: str) -> Any:
    from keras import ops

    return ops.cast(tensor, dtype)


def _finish(layer: Any, outputs: Any) -> Any:
    """Bias and activation exactly as Keras' convolution layers apply them."""
    from keras import ops

    if layer.use_bias:
        outputs = ops.add(outputs, ops.reshape(_cast(layer.bias, layer.compute_dtype), (-1,)))
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


def _kernel_rule(step: Step, plan: Plan, layer: Any, conv: Any, kernels: list[Any], macs: int):
    """A window rule for a convolution-like layer: ``conv(patch, *kernels, strides=...,
    padding="valid", dilation_rate=..., data_format=...)`` on the changed window (padded by the
    window gather, hence "valid"), then the layer's bias and activation."""
    rows, cols = _axes(
        step, plan, layer.kernel_size, layer.strides, layer.dilation_rate, layer.padding
    )

    def compute(patches: list[Any]) -> Any:
        dtype = layer.compute_dtype
        out = conv(
            _cast(patches[0], dtype),
            *(_cast(kernel, dtype) for kernel in kernels),
            strides=tuple(layer.strides),
            padding="valid",
            dilation_rate=tuple(layer.dilation_rate),
            data_format="channels_last",
        )
        return _finish(layer, out)

    return Rule(WINDOW, (Operand(step.inputs[0], rows, cols),), compute, macs)


def _conv_rule(step: Step, plan: Plan, layer: Any) -> Rule:
    from keras import ops

    cin, cout = _channels(plan, step.inputs[0]), _channels(plan, step.outputs[0])
    kh, kw = (int(k) for k in layer.kernel_size)
    macs = kh * kw * (cin // int(getattr(layer, "groups", 1) or 1)) * cout
    if (kh, kw) == (1, 1) and tuple(layer.strides) == (1, 1):
        return Rule(POINTWISE, macs=macs)
    return _kernel_rule(step, plan, layer, ops.conv, [layer.kernel], macs)


def _depthwise_rule(step: Step, plan: Plan, layer: Any) -> Rule:
    from keras import ops

    kh, kw = (int(k) for k in layer.kernel_size)
    macs = kh * kw * _channels(plan, step.outputs[0])
    return _kernel_rule(step, plan, layer, ops.depthwise_conv, [layer.kernel], macs)


def _separable_rule(step: Step, plan: Plan, layer: Any) -> Rule:
    from keras import ops

    kh, kw = (int(k) for k in layer.kernel_size)
    cin, cout = _channels(plan, step.inputs[0]), _channels(plan, step.outputs[0])
    middle = cin * int(layer.depth_multiplier)
    macs = kh * kw * middle + middle * cout
    kernels = [layer.depthwise_kernel, layer.pointwise_kernel]
    return _kernel_rule(step, plan, layer, ops.separable_conv, kernels, macs)


def _pool_rule(step: Step, plan: Plan, layer: Any, mode: str) -> Rule:
    from keras import ops

    pool = tuple(int(p) for p in layer.pool_size)
    strides = tuple(int(s) for s in layer.strides)
    rows, cols = _axes(step, plan, pool, strides, (1, 1), layer.padding)
    macs = pool[0] * pool[1] * _channels(plan, step.outputs[0])
    if mode == "max":

        def compute_max(patches: list[Any]) -> Any:
            return ops.max_pool(patches[0], pool, strides, padding="valid")

        operand = Operand(step.inputs[0], rows, cols, pad_value=-math.inf)
        return Rule(WINDOW, (operand,), compute_max, macs)
    pads = (rows.pad_before, rows.pad_after, cols.pad_before, cols.pad_after)
    if not any(pads):

        def compute_avg(patches: list[Any]) -> Any:
            return ops.average_pool(patches[0], pool, strides, padding="valid")

        return Rule(WINDOW, (Operand(step.inputs[0], rows, cols),), compute_avg, macs)
    # 'same' average pooling divides by the number of valid (unpadded) inputs under the window:
    # a constant map of counts on the output grid, separable in rows and columns.
    shape_in = plan.values[step.inputs[0]].shape
    shape_out = plan.values[step.outputs[0]].shape

    def counts() -> np.ndarray:
        per_axis = []
        for i, axis in enumerate((rows, cols)):
            start = np.arange(shape_out[1 + i]) * axis.stride - axis.pad_before
            stop = start + axis.kernel
            per_axis.append(np.minimum(stop, shape_in[1 + i]) - np.maximum(start, 0))
        grid = np.outer(per_axis[0], per_axis[1]).astype(np.float32)
        return grid[None, :, :, None]

    def compute_same(patches: list[Any]) -> Any:
        x, count = patches
        mean = ops.average_pool(x, pool, strides, padding="valid")
        return mean * ops.cast(pool[0] * pool[1], mean.dtype) / ops.cast(count, mean.dtype)

    operands = (Operand(step.inputs[0], rows, cols), Operand(None, constant=counts))
    return Rule(WINDOW, operands, compute_same, macs)


def _prelu_rule(step: Step, plan: Plan, layer: Any) -> Rule:
    from keras import activations, ops

    alpha_shape = tuple(int(d) for d in layer.alpha.shape)
    channels = _channels(plan, step.outputs[0])
    if len(alpha_shape) == 3 and alpha_shape[0] == 1 and alpha_shape[1] == 1:
        return Rule(POINTWISE, macs=channels)
    out_shape = plan.values[step.outputs[0]].shape

    def alpha() -> np.ndarray:
        value = np.asarray(ops.convert_to_numpy(layer.alpha))
        return np.broadcast_to(value, out_shape[1:])[None].copy()

    def compute(patches: list[Any]) -> Any:
        x, a = patches
        a = ops.cast(a, x.dtype)
        return activations.relu(x) + (-a) * activations.relu(-x)

    operands = (Operand(step.inputs[0]), Operand(None, constant=alpha))
    return Rule(WINDOW, operands, compute, 2 * channels)


def _rescaling_pointwise(layer: Any) -> bool:
    for param in (layer.scale, layer.offset):
        shape = np.shape(np.asarray(param))
        if len(shape) > 1 and any(d != 1 for d in shape[:-1]):
            return False
    return True


def _spatial_axes(axis: Any, ndim: int = 4) -> bool:
    """Whether a per-axis parameter layout (``axis`` of a normalization layer) touches
    height or width, which would make the layer position-dependent."""
    if axis is None:
        return False
    axes = [axis] if isinstance(axis, int) else list(axis)
    return any((a % ndim) in (1, 2) for a in axes)


def _merge_rule(step: Step, plan: Plan) -> Rule:
    out = plan.values[step.outputs[0]]
    shapes = [plan.values[v].shape for v in step.inputs]
    if not out.spatial or any(tuple(s[1:]) != tuple(out.shape[1:]) for s in shapes):
        return Rule(UNSUPPORTED, reason="merge of differently shaped maps (broadcast)")
    operands = tuple(Operand(v) for v in step.inputs)
    macs = _channels(plan, step.outputs[0]) * max(1, len(step.inputs) - 1)
    return Rule(WINDOW, operands, lambda patches: step.apply(patches)[0], macs)


def _concat_rule(step: Step, plan: Plan, layer: Any) -> Rule:
    out = plan.values[step.outputs[0]]
    shapes = [plan.values[v].shape for v in step.inputs]
    if (
        not out.spatial
        or int(layer.axis) % 4 != 3
        or any(len(s) != 4 or tuple(s[1:3]) != tuple(out.shape[1:3]) for s in shapes)
    ):
        return Rule(UNSUPPORTED, reason="concatenation along a spatial axis")
    operands = tuple(Operand(v) for v in step.inputs)
    return Rule(WINDOW, operands, lambda patches: step.apply(patches)[0], 0)


def _layers() -> Any:
    from keras import layers

    return layers


def _identity_classes() -> tuple[Any, ...]:
    names = (
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "Identity",
    )
    layers = _layers()
    return tuple(getattr(layers, n) for n in names if hasattr(layers, n))


def rule_for(step: Step, plan: Plan) -> Rule:
    """The window rule of one plan step (``UNSUPPORTED`` with a reason when there is none)."""
    L = _layers()
    op = step.op
    ins = [plan.values[v] for v in step.inputs]
    out = plan.values[step.outputs[0]] if step.outputs else None
    if len(step.outputs) != 1 or out is None or not ins:
        return Rule(UNSUPPORTED, reason="several outputs")
    channels_last = getattr(op, "data_format", "channels_last") == "channels_last"
    if getattr(op, "quantization_mode", None):
        return Rule(UNSUPPORTED, reason="quantized layer")
    spatial_in = all(v.spatial for v in ins)
    if not any(v.spatial for v in ins):
        return Rule(HEAD, reason="head on per-position vectors")
    if not spatial_in:
        return Rule(UNSUPPORTED, reason="mixes maps and vectors")
    if not channels_last:
        return Rule(UNSUPPORTED, reason="channels_first data format")
    elements = _channels(plan, step.outputs[0])
    if len(ins) == 1 and any(_is(op, cls) for cls in _identity_classes()):
        return Rule(IDENTITY)
    if _is(op, L.Conv2D):
        return _conv_rule(step, plan, op)
    if _is(op, L.DepthwiseConv2D):
        return _depthwise_rule(step, plan, op)
    if _is(op, L.SeparableConv2D):
        return _separable_rule(step, plan, op)
    if _is(op, L.MaxPooling2D):
        return _pool_rule(step, plan, op, "max")
    if _is(op, L.AveragePooling2D):
        return _pool_rule(step, plan, op, "average")
    if _is(op, L.ZeroPadding2D):
        (top, bottom), (left, right) = op.padding
        rows, cols = Axis(1, 1, int(top), int(bottom)), Axis(1, 1, int(left), int(right))
        return Rule(WINDOW, (Operand(step.inputs[0], rows, cols),), lambda p: p[0], 0)
    if _is(op, L.Cropping2D):
        (top, bottom), (left, right) = op.cropping
        rows, cols = Axis(1, 1, -int(top), -int(bottom)), Axis(1, 1, -int(left), -int(right))
        return Rule(WINDOW, (Operand(step.inputs[0], rows, cols),), lambda p: p[0], 0)
    if any(_is(op, getattr(L, n)) for n in ("Add", "Subtract", "Multiply", "Average")) or any(
        _is(op, getattr(L, n)) for n in ("Maximum", "Minimum")
    ):
        return _merge_rule(step, plan)
    if _is(op, L.Concatenate):
        return _concat_rule(step, plan, op)
    if _is(op, L.GlobalAveragePooling2D):
        return Rule(GAP, macs=elements)
    if _is(op, L.GlobalMaxPooling2D):
        return Rule(DENSE, macs=elements, reason="global max pooling: recomputed on full maps")
    if _is(op, L.BatchNormalization):
        if int(op.axis) % 4 != 3:
            return Rule(UNSUPPORTED, reason="batch normalization over a spatial axis")
        return Rule(POINTWISE, macs=elements)
    if _is(op, L.LayerNormalization):
        if _spatial_axes(op.axis):
            return Rule(UNSUPPORTED, reason="layer normalization over a spatial axis")
        return Rule(POINTWISE, macs=elements)
    if _is(op, L.Normalization):
        if _spatial_axes(op.axis):
            return Rule(UNSUPPORTED, reason="normalization statistics per position")
        return Rule(POINTWISE, macs=elements)
    if _is(op, L.Rescaling):
        if not _rescaling_pointwise(op):
            return Rule(UNSUPPORTED, reason="rescaling with per-position parameters")
        return Rule(POINTWISE, macs=elements)
    if _is(op, L.PReLU):
        return _prelu_rule(step, plan, op)
    if _is(op, L.Softmax):
        if _spatial_axes(op.axis):
            return Rule(UNSUPPORTED, reason="softmax over a spatial axis")
        return Rule(POINTWISE, macs=elements)
    if any(_is(op, getattr(L, n)) for n in ("ReLU", "Activation", "LeakyReLU", "ELU")):
        return Rule(POINTWISE, macs=elements)
    if type(op).__name__ == "Cast":  # a dtype cast Keras < 3.6 puts before mixed-precision layers
        return Rule(POINTWISE, macs=elements)
    return Rule(UNSUPPORTED, reason="no window rule for this layer")


def full_macs(step: Step, plan: Plan, rule: Rule) -> int:
    """Multiply-accumulates of the step on one full input (one image), for the estimate."""
    out = plan.values[step.outputs[0]] if step.outputs else None
    ins = [plan.values[v] for v in step.inputs]
    if out is None:
        return 0
    if rule.kind == GAP:
        shape = ins[0].shape
        return int(np.prod([d or 1 for d in shape[1:]]))
    if rule.kind in (WINDOW, POINTWISE, IDENTITY) and out.spatial:
        return rule.macs * int(out.shape[1]) * int(out.shape[2])
    L = _layers()
    if _is(step.op, L.Dense) and ins:
        units = int(out.shape[-1] or 1)
        fan_in = int(ins[0].shape[-1] or 1)
        positions = int(np.prod([d or 1 for d in ins[0].shape[1:-1]])) if ins[0].shape else 1
        return fan_in * units * positions
    if rule.kind == DENSE and ins:  # global max pooling reads every input element
        return int(np.prod([d or 1 for d in ins[0].shape[1:]]))
    return int(np.prod([d or 1 for d in out.shape[1:]]))

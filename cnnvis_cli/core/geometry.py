"""Which layers' outputs keep the image's axes: where a class activation map can be read.

A CAM is a layer's (height, width) map upsampled onto the image, so it is only right when the
layer's first spatial axis still runs down the image and the second across it. A ``Permute((2, 1,
3))`` (common in models converted from Caffe), a ``Reshape``, a ``Lambda`` or a custom layer of
unknown geometry may reorder or mix those axes: a map read after one is transposed or scrambled.

:func:`aligned_layers` walks the model's graph from its input, through nested models: a layer's
output is *aligned* when every input it was called on is aligned and the layer keeps the axes:

- layers whose geometry is known to keep them (convolutions, pooling, normalisation,
  activations, element-wise merges, channel concatenation, padding, cropping, resizing);
- a layer of unknown geometry (``Lambda``, a custom layer) whose 4-D output has the same height
  and width as its 4-D input: such a layer is almost always element-wise (preprocessing in a
  ``Lambda``, a custom activation or attention block). A transpose of a *square* map would pass
  this test; a ``Permute`` layer does not (it is known), and ``--layer`` after any layer that
  breaks alignment is refused.

Anything else (``Permute`` with swapped axes, ``Reshape``, ``Flatten``, an unknown layer that
changes the map's size or rank) breaks alignment for everything computed from it.
"""

from __future__ import annotations

from typing import Any

AXIS_PRESERVING = frozenset(
    {
        # convolutions and pooling: a position's output comes from the same place in the input
        "Conv2D",
        "Convolution2D",
        "DepthwiseConv2D",
        "SeparableConv2D",
        "SeparableConvolution2D",
        "Conv2DTranspose",
        "MaxPooling2D",
        "MaxPool2D",
        "AveragePooling2D",
        "AvgPool2D",
        "ZeroPadding2D",
        "Cropping2D",
        "UpSampling2D",
        "Resizing",
        "CenterCrop",
        # per-position maps and normalisation
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "UnitNormalization",
        "Activation",
        "ReLU",
        "LeakyReLU",
        "PReLU",
        "ELU",
        "Softmax",
        "Rescaling",
        "Normalization",
        "Dropout",
        "SpatialDropout2D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "Identity",
        "Masking",
        # merges of same-shaped (or broadcast (1, 1, C) gate) maps
        "Add",
        "Subtract",
        "Multiply",
        "Average",
        "Maximum",
        "Minimum",
    }
)


def _layers(model: Any) -> list[Any]:
    return list(getattr(model, "layers", None) or [])


def _is_container(layer: Any) -> bool:
    return hasattr(layer, "layers") and isinstance(layer.layers, list) and bool(layer.layers)


KNOWN_TO_REORDER = frozenset({"Permute", "Reshape", "Flatten", "Concatenate", "Transpose"})


def _same_spatial_shape(layer: Any) -> bool:
    """A 4-D input and output of the same height and width (Keras' static shapes)."""
    try:
        before, after = tuple(layer.input.shape), tuple(layer.output.shape)
    except (AttributeError, ValueError, RuntimeError):
        return False
    return len(before) == len(after) == 4 and before[1:3] == after[1:3]


def keeps_axes(layer: Any) -> bool:
    """True when ``layer`` (not a container) keeps its input's height and width axes in place."""
    kind = type(layer).__name__
    if kind in AXIS_PRESERVING:
        return True
    if kind == "Permute":
        return tuple(getattr(layer, "dims", ())) in ((1, 2, 3), (1, 2))
    if kind == "Concatenate":
        return getattr(layer, "axis", -1) in (-1, 3)
    if kind in KNOWN_TO_REORDER:
        return False
    return _same_spatial_shape(layer)


def _parents(layer: Any, members: set[int]) -> list[Any]:
    """Layers that feed ``layer`` inside the same model (``members`` holds their ids)."""
    parents = []
    for node in getattr(layer, "_inbound_nodes", None) or []:
        for parent in getattr(node, "parent_nodes", None) or []:
            operation = getattr(parent, "operation", None)
            if operation is not None and id(operation) in members:
                parents.append(operation)
    return parents


def _ordered_operations(model: Any) -> tuple[list[Any], bool]:
    """The model's operations in call order, and whether they form a plain chain (Sequential)."""
    operations = getattr(model, "operations", None)
    if operations:
        return list(operations), False
    return _layers(model), True


def _walk(model: Any, input_aligned: bool, aligned: dict[int, bool]) -> bool:
    """Mark ``aligned[id(layer)]`` for every layer of ``model``; returns its output's alignment."""
    operations, chain = _ordered_operations(model)
    members = {id(op) for op in operations}
    previous = input_aligned
    last = input_aligned
    for op in operations:
        if type(op).__name__ == "InputLayer":
            aligned[id(op)] = input_aligned
            continue
        if chain:
            inputs_aligned = previous
        else:
            parents = _parents(op, members)
            inputs_aligned = (
                all(aligned.get(id(p), False) for p in parents) if parents else (input_aligned)
            )
        if _is_container(op):
            result = _walk(op, inputs_aligned, aligned)
        else:
            result = inputs_aligned and keeps_axes(op)
        aligned[id(op)] = result
        previous = last = result
    if not chain:
        outputs = getattr(model, "outputs", None) or []
        producers = [getattr(t, "_keras_history", None) for t in outputs]
        flags = [aligned.get(id(h.operation), False) for h in producers if h is not None]
        if flags:
            return all(flags)
    return last


def aligned_layers(model: Any) -> set[int]:
    """Ids of the layers (at any nesting depth) whose outputs keep the image's axes."""
    aligned: dict[int, bool] = {}
    _walk(model, True, aligned)
    return {key for key, value in aligned.items() if value}

"""The one gradient computation the gradient methods share.

:func:`logit_gradients` differentiates each target's *logit* (the score before a final softmax or
sigmoid) with respect to either the raw input pixels or a layer's features, inside the caller's
compiled function. The tape watches only that tensor (``watch_accessed_variables=False``: the
model's weights are never differentiated), and a traced function prunes the weight gradients
TensorFlow's convolution gradient would otherwise compute — on some Intel CPUs oneDNN's eager
filter gradient of a 1x1 stride-2 convolution corrupts the heap.

Several layers' features can be differentiated from one forward pass (multi-layer CAMs), and
the model input itself instead of the raw pixels (``preprocessed``: gradient x input).

An optional ``context`` (e.g. guided back-propagation's swapped ReLUs) is active during the
forward pass, which is when the backward functions are recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from cnnvis_cli.core.adapter import Forward, LayerInfo, ModelAdapter
from cnnvis_cli.core.targets import gather_targets
from cnnvis_cli.core.tf import tf_and_keras


def logit_gradients(
    adapter: ModelAdapter,
    raw: Any,
    choose: Callable[[Forward], Any],
    top_k: int,
    *,
    layer: LayerInfo | Sequence[LayerInfo] | None = None,
    context: Any = None,
    preprocessed: bool = False,
) -> tuple[Any, Any, Forward]:
    """Gradients (B, K, ...) of each target's logit, the targets (B, K) and the forward pass.

    The gradients are with respect to the input (B, K, h, w, c) when ``layer`` is None — the
    raw pixels, or the model input itself when ``preprocessed`` (``raw`` is then already
    preprocessed) — else the layer's features (B, K, h', w', k); for a sequence of layers, a
    list with one such tensor per layer. ``choose(forward)`` returns the (B, K) int32 targets;
    K = ``top_k``. A target the source does not influence has a zero gradient.
    """
    tf, _ = tf_and_keras()
    raw = tf.convert_to_tensor(raw, tf.float32)
    with contextlib.ExitStack() as stack:
        if context is not None:
            stack.enter_context(context)
        tape = stack.enter_context(
            tf.GradientTape(watch_accessed_variables=False, persistent=top_k > 1)
        )
        if layer is None:
            tape.watch(raw)
        forward = adapter.forward(raw, layer, tape=tape, preprocessed=preprocessed)
        targets = choose(forward)
        scores = gather_targets(forward.logits, targets)
        per_target = [scores[:, k] for k in range(top_k)]
    several = isinstance(layer, (list, tuple))
    features = list(forward.features) if several else [forward.features]
    sources = [raw] if layer is None else features
    gradients: list[list[Any]] = [[] for _ in sources]
    for score in per_target:
        for found, gradient in zip(gradients, tape.gradient(score, sources), strict=True):
            found.append(gradient)
    del tape
    stacked = [
        tf.cast(
            tf.stack([tf.zeros_like(s) if g is None else g for g in found], axis=1),
            tf.float32,
        )
        for s, found in zip(sources, gradients, strict=True)
    ]
    return (stacked if several else stacked[0]), targets, forward

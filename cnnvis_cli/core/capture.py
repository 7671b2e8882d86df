"""Read intermediate tensors during a forward pass: a capture object that owns its handles.

While a forward pass runs (traced), each captured layer's call entry point (``call``, or
``quantized_call`` for a quantized layer, which Keras calls instead) is wrapped so that its output
— or its first input, or for a score head its pre-activation output — is recorded. Gradients then
flow from the outermost output through any nesting, with no graph surgery (the usual cause of
"Graph disconnected" errors on transfer-learning models). The wrappers are instance attributes,
removed by :meth:`Capture.release` (on leaving the ``with`` block), so the user's model is left as
it was. Reading a capture that did not fire raises: a silent fallback would explain the wrong
tensor (pytorch-grad-cam's ``ActivationsAndGradients`` is the precedent for owning and releasing
the hooks).

:meth:`Capture.replace` *modifies* a layer's output for the pass (Ablation-CAM zeroes channels
with it): later layers see ``transform(output)``. The replacement is removed with the other
wrappers, so the model computes its own outputs again after the ``with`` block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cnnvis_cli.errors import ModelError


class CaptureError(ModelError):
    """A captured layer was not called during the forward pass."""


def _identity(x: Any) -> Any:
    return x


def call_entry(layer: Any) -> str:
    """The method Keras' ``Layer.__call__`` runs: ``quantized_call`` for quantized layers."""
    return "quantized_call" if getattr(layer, "quantization_mode", None) else "call"


class Capture:
    """Records tensors of chosen layers during one forward pass; use as a context manager.

    ``tape``: a ``tf.GradientTape`` that should watch each recorded output (so gradients with
    respect to it can be taken without watching the model's weights).
    """

    def __init__(self, tape: Any = None) -> None:
        self.tape = tape
        self._values: dict[str, Any] = {}
        self._paths: dict[str, str] = {}
        self._wrapped: list[tuple[Any, str]] = []

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def output(self, key: str, layer: Any, path: str | None = None) -> None:
        """Record ``layer``'s output under ``key``."""

        def record(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            self._store(key, out)
            return out

        self._wrap(key, layer, path, record)

    def replace(
        self, key: str, layer: Any, transform: Callable[[Any], Any], path: str | None = None
    ) -> None:
        """Replace ``layer``'s output by ``transform(output)`` for this pass; record the result
        under ``key``."""

        def record(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            out = transform(original(*args, **kwargs))
            self._store(key, out)
            return out

        self._wrap(key, layer, path, record)

    def input(self, key: str, layer: Any, path: str | None = None) -> None:
        """Record ``layer``'s first input under ``key`` (e.g. the logits entering a Softmax)."""

        def record(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            self._store(key, args[0])
            return original(*args, **kwargs)

        self._wrap(key, layer, path, record)

    def pre_activation(self, key: str, layer: Any, path: str | None = None) -> None:
        """Record ``layer``'s output before its ``activation`` (a Dense head's logits)."""

        def record(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            activation = layer.activation
            object.__setattr__(layer, "activation", _identity)
            try:
                logits = original(*args, **kwargs)
            finally:
                object.__setattr__(layer, "activation", activation)
            self._store(key, logits)
            return activation(logits)

        self._wrap(key, layer, path, record)

    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            where = self._paths.get(key, key)
            raise CaptureError(
                f"layer {where!r} was not called in the forward pass, so its tensor cannot be "
                "read; choose another --layer (`cnnvis layers MODEL` lists them)"
            )
        return self._values[key]

    def release(self) -> None:
        """Remove every wrapper, restoring the layers' own call methods."""
        for layer, entry in reversed(self._wrapped):
            if entry in layer.__dict__:
                object.__delattr__(layer, entry)
        self._wrapped.clear()

    def _store(self, key: str, value: Any) -> None:
        if self.tape is not None:
            self.tape.watch(value)
        self._values[key] = value

    def _wrap(self, key: str, layer: Any, path: str | None, record: Callable[..., Any]) -> None:
        entry = call_entry(layer)
        original = getattr(layer, entry)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            return record(original, *args, **kwargs)

        object.__setattr__(layer, entry, wrapped)
        self._wrapped.append((layer, entry))
        self._paths[key] = path or layer.name

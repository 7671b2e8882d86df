"""The one error of the incremental engine."""

from __future__ import annotations


class UnsupportedModel(ValueError):
    """Nothing of the model can be computed incrementally (the first layer after the input has
    no window rule, the model has several inputs, or it is not a functional graph).

    ``layer_path`` is the slash-separated path of the offending layer (through nested models),
    ``class_name`` its class.
    """

    def __init__(self, layer_path: str, class_name: str, reason: str = "") -> None:
        self.layer_path = layer_path
        self.class_name = class_name
        self.reason = reason
        detail = f": {reason}" if reason else ""
        super().__init__(
            f"incremental occlusion cannot start at {layer_path!r} ({class_name}){detail}"
        )

"""Which classes to explain: a fixed class, or each image's top-k.

``Targets`` selects, inside a compiled function, a (B, K) int32 tensor of class indices from the
model's (B, C) outputs; :func:`gather_targets` reads any (B, C) tensor at those indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cnnvis_cli.core.tf import tf_and_keras


@dataclass(frozen=True)
class Targets:
    """Explain ``class_index`` for every image, or else each image's ``top_k`` best classes."""

    class_index: int | None = None
    top_k: int = 1

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"--top-k must be at least 1, got {self.top_k}")
        if self.class_index is not None and self.top_k != 1:
            raise ValueError(
                f"--class and --top-k {self.top_k} conflict: --class explains one given class, "
                "--top-k the K best; use one of them"
            )

    @property
    def count(self) -> int:
        """K, the number of targets per image."""
        return 1 if self.class_index is not None else self.top_k

    def check(self, num_classes: int) -> None:
        """Raise ValueError when the selection does not fit a model with ``num_classes``."""
        if self.class_index is None and self.top_k > num_classes:
            raise ValueError(f"--top-k {self.top_k} exceeds the model's {num_classes} classes")

    def select(self, outputs: Any) -> Any:
        """(B, K) int32 target classes for (B, C) model outputs."""
        tf, _ = tf_and_keras()
        if self.class_index is not None:
            return tf.fill([tf.shape(outputs)[0], 1], tf.constant(self.class_index, tf.int32))
        return tf.math.top_k(outputs, k=self.top_k).indices


def gather_targets(values: Any, targets: Any) -> Any:
    """values[b, targets[b, k]] for a (B, C) tensor and (B, K) indices -> (B, K)."""
    tf, _ = tf_and_keras()
    return tf.gather(values, targets, batch_dims=1)


def top1(outputs: Any) -> tuple[Any, Any]:
    """The predicted class (B,) int32 and its output (B,): what the model itself says."""
    tf, _ = tf_and_keras()
    best = tf.math.top_k(outputs, k=1)
    return best.indices[:, 0], best.values[:, 0]

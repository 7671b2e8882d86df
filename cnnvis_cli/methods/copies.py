"""The base of methods that run the model on many modified copies of each image.

SmoothGrad averages the gradients of noisy copies, Integrated Gradients weights the gradients of
points on a path, occlusion scores patched copies, Score-CAM masked ones. Targets come from the
*original* images (one compiled forward pass); the copies then go through one compiled function
``batching.evaluations`` rows at a time (``core.batching.chunks``: equal chunks, the last padded),
so memory does not grow with the number of copies and the function is traced once per shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnvis_cli.core.batching import chunks, pad_rows
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.base import Method


class CopiesMethod(Method):
    """Base: per-image targets from one forward pass; many evaluated copies per call."""

    def __init__(self, adapter: Any, options: Any = None, **kwargs: Any) -> None:
        super().__init__(adapter, options, **kwargs)
        self._predict = self.compile(self._predict_fn)

    def _predict_fn(self, raw: Any) -> dict[str, Any]:
        return self.chosen(self.adapter.forward(raw))

    def predict_targets(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Targets (B, K), their outputs (B, K) and the top-1 prediction (B,) of raw images,
        ``batching.images`` at a time (a fixed-size model's chunks padded: one trace)."""
        tf, _ = tf_and_keras()
        size = self.batching.images if self.adapter.input_size is not None else 1
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            real = len(chunk)
            padded = pad_rows(chunk, size) if self.adapter.input_size is not None else chunk
            result = self._predict(tf.constant(padded))
            parts.append({k: np.asarray(v)[:real] for k, v in result.items()})
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        merged["targets"] = merged["targets"].astype(np.int32)
        return merged

    def evaluation_chunks(self, total: int) -> Any:
        """``core.batching.chunks`` over ``total`` rows, ``batching.evaluations`` at a time."""
        return chunks(total, self.batching.evaluations)

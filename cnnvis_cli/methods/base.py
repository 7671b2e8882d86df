"""The small interface every explanation method implements.

A method is built once per run for a model (so its compiled function is traced once) and then
called on fixed-size batches of raw 0..255 pixels. It returns one ``Explanation`` per image:
the target classes, their scores and one map per target at the method's native resolution
(the runner resizes maps to each input's own resolution).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from cnnvis_cli._tf import tf_and_keras
from cnnvis_cli.model import ModelAdapter

ProgressCallback = Callable[[float], None]
"""Called with the fraction (0..1) of the current batch that is done."""


@dataclass
class Explanation:
    """What a method found for one image."""

    class_indices: list[int]
    scores: list[float]  # the model's output for each target (a probability for softmax heads)
    maps: list[np.ndarray]  # heatmaps h x w in [0, 1]; signed maps h x w x c
    extras: dict[str, Any] = field(default_factory=dict)

    def extras_for_summary(self) -> dict[str, Any]:
        """The JSON-friendly extras (numbers, strings, lists of them) for the run summary."""
        return {k: v for k, v in self.extras.items() if _json_friendly(v)}


def _json_friendly(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_friendly(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_friendly(v) for k, v in value.items())
    return False


class Method(ABC):
    """Base class: target selection, batch padding and the parameters shared by all methods.

    Args:
        adapter: the loaded model.
        class_index: explain this class for every image; None explains each image's top-k.
        top_k: number of best classes to explain per image when ``class_index`` is None.
        batch_size: images (or occluded copies) per compiled call; short batches are padded
            to this size so the compiled function is traced once.
        eager: run the computation eagerly instead of tracing it; faster when the whole run is
            one call (tracing costs more than it saves), e.g. a single image from a shell.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    signed: ClassVar[bool] = False  # True: maps are signed h x w x c gradients, not heatmaps
    needs_gradients: ClassVar[bool] = True  # False: forward passes only (runs on SavedModels)
    batch_counts_images: ClassVar[bool] = True  # False: batch_size counts copies of one image

    def __init__(
        self,
        adapter: ModelAdapter,
        *,
        class_index: int | None = None,
        top_k: int = 1,
        batch_size: int = 16,
        eager: bool = False,
    ) -> None:
        if top_k < 1:
            raise ValueError("--top-k must be at least 1")
        if class_index is None and top_k > adapter.num_classes:
            raise ValueError(f"--top-k {top_k} exceeds the model's {adapter.num_classes} classes")
        self.adapter = adapter
        self.class_index = class_index
        self.top_k = 1 if class_index is not None else top_k
        self.batch_size = batch_size
        self.eager = eager
        self._predict: Any = None  # compiled on first use by predict_targets

    def params(self) -> dict[str, Any]:
        """Parameters recorded in the run summary."""
        return {"class_index": self.class_index, "top_k": self.top_k}

    def notes(self) -> list[str]:
        """Caveats worth telling the user once per run (e.g. layers a method cannot handle)."""
        return []

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        """Explain a batch of raw images (N x h x w x c float32, N <= batch_size)."""
        count = len(images)
        if count == 0:
            return []
        if count < self.batch_size and self.adapter.input_size is not None:
            pad = np.repeat(images[-1:], self.batch_size - count, axis=0)
            images = np.concatenate([images, pad], axis=0)
        return self._explain(images, progress)[:count]

    @abstractmethod
    def _explain(self, images: np.ndarray, progress: ProgressCallback | None) -> list[Explanation]:
        """Explain a full batch."""

    def compile(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` as a ``tf.function`` (traced once per input shape), or as is if eager."""
        tf, _ = tf_and_keras()
        return function if self.eager else tf.function(function, reduce_retracing=True)

    def predict_targets(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Targets (B, K) int32 and their outputs (B, K) for raw images, one forward pass each.

        For methods that explain copies of an image (occlusion, SmoothGrad, ...): runs in padded
        chunks of ``batch_size`` (a single image alone), so at most two shapes are traced.
        """
        if self._predict is None:
            self._predict = self.compile(self._predict_fn)
        count = len(images)
        # a lone image (the usual shell call) costs one pass, not batch_size; other counts are
        # padded to batch_size, so at most two shapes are ever traced
        step = self.batch_size if count > 1 and self.adapter.input_size is not None else count
        targets, outputs = [], []
        for start in range(0, count, step):
            chunk = images[start : start + step]
            real = len(chunk)
            if real < step:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - real, axis=0)])
            chunk_targets, chunk_outputs = self._predict(chunk)
            targets.append(chunk_targets.numpy()[:real])
            outputs.append(chunk_outputs.numpy()[:real])
        return np.concatenate(targets).astype(np.int32), np.concatenate(outputs)

    def _predict_fn(self, raw: Any) -> tuple[Any, Any]:
        outputs = self.adapter.forward(raw).outputs
        targets = self.select_targets(outputs)
        return targets, gather_targets(outputs, targets)

    # -- helpers for compiled functions --------------------------------------------------------

    def select_targets(self, outputs: Any) -> Any:
        """(B, K) int32 target classes: the fixed class, or each image's top-k outputs."""
        tf, _ = tf_and_keras()
        if self.class_index is not None:
            return tf.fill([tf.shape(outputs)[0], 1], tf.constant(self.class_index, tf.int32))
        return tf.math.top_k(outputs, k=self.top_k).indices


def gather_targets(values: Any, targets: Any) -> Any:
    """values[b, targets[b, k]] for a (B, C) tensor and (B, K) indices -> (B, K)."""
    tf, _ = tf_and_keras()
    return tf.gather(values, targets, batch_dims=1)


def normalize_maps(maps: Any) -> Any:
    """Per-map min-max normalisation to [0, 1] over the spatial axes (1, 2), epsilon-safe."""
    tf, _ = tf_and_keras()
    low = tf.reduce_min(maps, axis=(1, 2), keepdims=True)
    high = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return (maps - low) / (high - low + 1e-8)


def explanations_from(
    maps: np.ndarray, targets: np.ndarray, scores: np.ndarray
) -> list[Explanation]:
    """Split (B, K, ...) maps and (B, K) targets/scores into per-image Explanations."""
    return [
        Explanation(
            class_indices=[int(c) for c in targets[b]],
            scores=[float(s) for s in scores[b]],
            maps=[np.asarray(m, dtype=np.float32) for m in maps[b]],
        )
        for b in range(len(targets))
    ]

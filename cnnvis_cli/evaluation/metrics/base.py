"""What every faithfulness metric shares: settings, input checks and batched model scores.

A metric scores one map of one image for one class (``evaluate(image, saliency, class_index)``):
``image`` is the raw model-input image (h x w x c, 0..255, at the model's input size) and
``saliency`` the non-negative h x w importance the pipeline derives from any map
(``methods.normalize.heat_from_map``). Metrics that run the model do it in compiled functions,
``batch_size`` images per call in equal chunks (``core.batching.chunks``), so each function is
traced once per input shape.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.batching import chunks
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.core.tracing import Compiled


@dataclass(frozen=True)
class MetricSettings:
    """The run's metric settings (``--metric-steps``, ``--metric-samples``, ``--eval-batch``)."""

    steps: int = 32
    samples: int = 128
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "samples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def known_names(names: Sequence[str] | str, choices: Sequence[str]) -> list[str]:
    """``names`` lower-cased, de-duplicated in order; ValueError for none or an unknown one."""
    if isinstance(names, str):
        names = (names,)
    chosen = list(dict.fromkeys(str(n).strip().lower() for n in names))
    unknown = [n for n in chosen if n not in choices]
    if unknown or not chosen:
        raise ValueError(
            f"unknown metric(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(choices)}"
        )
    return chosen


def validate(
    adapter: ModelAdapter, image: Any, saliency: Any, class_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """The image (h x w x c float32) and saliency (h x w float64), or ValueError saying why."""
    image = np.asarray(image, dtype=np.float32)
    saliency = np.asarray(saliency, dtype=np.float64)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] != adapter.channels:
        raise ValueError(f"image must be h x w x {adapter.channels} raw pixels, got {image.shape}")
    size = adapter.input_size
    if size is not None and image.shape[:2] != size:
        raise ValueError(
            f"image is {image.shape[0]}x{image.shape[1]}; the model expects {size[0]}x{size[1]}"
        )
    if saliency.ndim == 3 and saliency.shape[2] == 1:
        saliency = saliency[:, :, 0]
    if saliency.shape != image.shape[:2]:
        raise ValueError(
            f"saliency must be an h x w map at the image's resolution {image.shape[:2]}, "
            f"got {saliency.shape}"
        )
    if not np.isfinite(saliency).all():
        raise ValueError("saliency contains NaN or infinite values")
    if isinstance(class_index, bool) or not 0 <= int(class_index) < adapter.num_classes:
        raise ValueError(
            f"class index {class_index} is out of range: the model has "
            f"{adapter.num_classes} classes"
        )
    return image, saliency


class Scorer:
    """The model's output for one class on many images, in compiled chunks of ``batch_size``.

    ``masked(image, keep)``: the images ``image * keep[i]`` (keep: n x h x w in [0, 1], 0 =
    black, the raw-scale baseline) built inside the compiled function; ``stack(images)``: given
    images (n x h x w x c). Outputs are what the model returns (probabilities for softmax heads).
    """

    def __init__(self, adapter: ModelAdapter, batch_size: int) -> None:
        self.adapter = adapter
        self.batch_size = int(batch_size)
        self._masked = Compiled(self._masked_fn)
        self._stack = Compiled(self._stack_fn)

    @property
    def functions(self) -> list[Compiled]:
        return [self._masked, self._stack]

    def _masked_fn(self, image: Any, keep: Any, class_index: Any) -> Any:
        tf, _ = tf_and_keras()
        images = image[None] * tf.cast(keep, image.dtype)[..., None]
        return tf.gather(self.adapter.outputs(images), class_index, axis=1)

    def _stack_fn(self, images: Any, class_index: Any) -> Any:
        tf, _ = tf_and_keras()
        return tf.gather(self.adapter.outputs(images), class_index, axis=1)

    def _run(self, total: int, call: Any) -> np.ndarray:
        scores = np.empty(total, dtype=np.float64)
        for chunk in chunks(total, self.batch_size):
            result = np.asarray(call(chunk.index))
            scores[chunk.index[: chunk.real]] = result[: chunk.real]
        return scores

    def masked(self, image: np.ndarray, keep: np.ndarray, class_index: int) -> np.ndarray:
        tf, _ = tf_and_keras()
        image_t = tf.constant(np.asarray(image, np.float32))
        target = tf.constant(int(class_index), tf.int32)
        keep = np.asarray(keep, np.float32)
        return self._run(
            len(keep), lambda rows: self._masked(image_t, tf.constant(keep[rows]), target)
        )

    def stack(self, images: np.ndarray, class_index: int) -> np.ndarray:
        tf, _ = tf_and_keras()
        target = tf.constant(int(class_index), tf.int32)
        images = np.asarray(images, np.float32)
        return self._run(len(images), lambda rows: self._stack(tf.constant(images[rows]), target))


class Metric(ABC):
    """Base of the metrics in this package (one module each; registry in ``__init__``)."""

    keys: ClassVar[tuple[str, ...]]  # the result keys this class can produce

    def __init__(
        self,
        adapter: ModelAdapter,
        settings: MetricSettings | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.adapter = adapter
        self.settings = settings or MetricSettings()
        self.names = tuple(names) if names else self.keys

    @classmethod
    def from_settings(
        cls, adapter: ModelAdapter, settings: MetricSettings, names: Sequence[str]
    ) -> Metric:
        """The registry's constructor."""
        return cls(adapter, settings, names)

    @abstractmethod
    def evaluate(self, image: Any, saliency: Any, class_index: int) -> dict[str, float]:
        """The metric's figures for one image's map and class."""

    def params(self) -> dict[str, Any]:
        return {}

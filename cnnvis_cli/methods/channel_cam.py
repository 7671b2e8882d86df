"""The base of CAMs that weight each channel by one model evaluation: Score-CAM, Ablation-CAM.

For the activations A^k (k = 1..K) of a layer, each channel k of each image is scored by one
forward pass of a modified copy (Score-CAM: the input masked by the upsampled channel;
Ablation-CAM: the layer's output with channel k zeroed); the subclass turns the scores into
weights w_k, and::

    L^c = ReLU( sum_k w_k A^k )                  (or its first principal component,
                                                  ``--eigen-smooth``, see ``cam.py``)

at the layer's resolution, min-max normalized to [0, 1].

``--max-channels N`` scores only the N channels whose activation maps have the largest spatial
variance (per image); the others weigh 0. Memory does not grow with K: the copies are built
inside one compiled function, ``--eval-batch`` (image, channel) pairs at a time (equal chunks,
the last padded, so the function is traced once per input shape and layer); only the layer's
activations (B, h, w, K) are kept for the batch. One modified forward pass scores every target
of an image.

``--layer`` repeated and ``--aug-smooth`` work as for the gradient CAMs (``cam.py``): each layer
is scored on its own and the normalized maps are resized to the largest layer's resolution,
averaged and normalized; each augmented variant (flip x model-input factor 1.0 / 1.1) is scored
for the *original* image's targets, its map flipped back, and the variants' maps averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.batching import chunks, pad_rows
from cnnvis_cli.core.targets import gather_targets
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.base import Explanation, Facts, Method, ProgressCallback, explanations_from
from cnnvis_cli.methods.cam import (
    AUGMENTATIONS,
    CAMOptions,
    combine_layers,
    first_component,
    layer_params,
    resolve_layers,
)
from cnnvis_cli.methods.normalize import minmax_range_tf, normalize_minmax_tf
from cnnvis_cli.options import check_range, option


@dataclass(frozen=True)
class ChannelOptions(CAMOptions):
    max_channels: int | None = option(
        None,
        "Score only the N channels with the largest activation variance (the others weigh 0).",
        metavar="N",
        min=1,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("--max-channels", self.max_channels, 1)


@dataclass(frozen=True)
class ChannelFacts(Facts):
    """The channels that were scored (all, or the largest-variance ones) of the first layer."""

    channels: list[int]


def flip_width(images: np.ndarray) -> np.ndarray:
    """(B, h, w, c) images mirrored left-right."""
    return np.ascontiguousarray(images[:, :, ::-1])


class ChannelCAM(Method):
    """Base: channel weights from one modified forward pass per (image, channel) pair."""

    options_type = ChannelOptions

    def __init__(self, adapter: ModelAdapter, options: ChannelOptions | None = None, **kwargs):
        super().__init__(adapter, options, **kwargs)
        self.layers = resolve_layers(adapter, self.options.layer)
        self.layer = self.layers[0]
        counts = [info.output_shape[-1] if info.output_shape else None for info in self.layers]
        self.channel_counts = [int(c) if c else None for c in counts]
        self._features = self.compile(self._features_fn)
        self._scored = self.compile(self._scored_fn)
        self._combine = self.compile(self._combine_fn)

    def params(self) -> dict[str, Any]:
        counts = self.channel_counts
        return {
            **super().params(),
            "layer": layer_params(self.layers),
            "channels": counts[0] if len(counts) == 1 else counts,
        }

    # -- what a subclass defines --------------------------------------------------------------

    def scores(
        self, images: Any, features: Any, factor: Any, targets: Any, pairs: Any, number: int
    ) -> Any:
        """(n, T) scores of n modified copies (inside a compiled function). ``pairs`` (n, 2)
        int32 rows are (image index into ``images``/``features``/``targets``, channel index);
        ``images`` are raw pixels whose model input is multiplied by ``factor``, ``features``
        their activations (B, h, w, K) at layer ``number`` (an index into ``self.layers``)."""
        raise NotImplementedError

    def weights(self, scores: Any, reference: Any) -> Any:
        """(B, N, T) channel weights from the scores (B, N, T) of the scored channels and the
        unmodified images' target logits ``reference`` (B, T)."""
        raise NotImplementedError

    # -- compiled functions -------------------------------------------------------------------

    def model_inputs(self, raw: Any, factor: Any) -> Any:
        """The model input of raw pixels, times the augmentation ``factor``."""
        return self.adapter.preprocess(raw) * factor

    def _features_fn(self, images: Any, factor: Any, number: int) -> dict[str, Any]:
        """Activations (B, h, w, K) of layer ``number``, the chosen targets, the logits (B, C)
        and the channels to score (B, N)."""
        tf, _ = tf_and_keras()
        inputs = self.model_inputs(images, factor)
        forward = self.adapter.forward(inputs, self.layers[number], preprocessed=True)
        features = tf.cast(forward.features, tf.float32)
        channels = int(features.shape[-1])
        limit = self.options.max_channels
        if limit is None or limit >= channels:
            batch = tf.shape(features)[0]
            selected = tf.tile(tf.range(channels, dtype=tf.int32)[None], [batch, 1])
        else:
            variance = tf.math.reduce_variance(features, axis=(1, 2))
            selected = tf.math.top_k(variance, k=limit).indices
        return {
            "features": features,
            "selected": selected,
            "logits": tf.cast(forward.logits, tf.float32),
            **self.chosen(forward),
        }

    def _scored_fn(
        self, images: Any, features: Any, factor: Any, targets: Any, pairs: Any, number: int
    ) -> Any:
        return self.scores(images, features, factor, targets, pairs, number)

    def _combine_fn(self, features: Any, selected: Any, scores: Any, reference: Any) -> Any:
        """Normalized maps (B, T, h, w) and their ranges (B, T) from activations (B, h, w, K),
        the scored channels (B, N), their scores (B, N, T) and the target logits (B, T)."""
        tf, _ = tf_and_keras()
        used = tf.gather(features, selected, axis=3, batch_dims=1)  # (B, h, w, N)
        weights = self.weights(scores, reference)
        maps = []
        for t in range(scores.shape[2]):
            weighted = used * weights[:, None, None, :, t]
            if self.options.eigen_smooth:
                maps.append(tf.nn.relu(first_component(weighted)))
            else:
                maps.append(tf.nn.relu(tf.reduce_sum(weighted, axis=-1)))
        return {
            "maps": tf.stack([normalize_minmax_tf(m) for m in maps], axis=1),
            "scales": tf.stack([minmax_range_tf(m) for m in maps], axis=1),
        }

    # -- computation ----------------------------------------------------------------------------

    def explain(
        self, images: np.ndarray, progress: ProgressCallback | None = None
    ) -> list[Explanation]:
        """Explain N raw images; ``batching.evaluations`` modified copies per compiled call."""
        images = np.asarray(images, dtype=np.float32)
        count = len(images)
        step = self.batching.images if self.adapter.input_size is not None else 1
        explanations: list[Explanation] = []
        starts = range(0, count, step)
        for number, start in enumerate(starts):

            def report(fraction: float, number: int = number) -> None:
                if progress is not None:
                    progress((number + fraction) / len(starts))

            chunk = images[start : start + step]
            padded = pad_rows(chunk, step)  # one batch shape for the functions
            explanations.extend(self._explain_padded(padded, len(chunk), report))
        return explanations

    def _explain_padded(self, images: np.ndarray, real: int, report: Any) -> list[Explanation]:
        """Explain the first ``real`` images of a padded batch (B, H, W, C)."""
        tf, _ = tf_and_keras()
        variants = AUGMENTATIONS if self.options.aug_smooth else AUGMENTATIONS[:1]
        runs = len(variants) * len(self.layers)
        chosen: dict[str, Any] = {}
        facts: list[ChannelFacts] = []
        per_variant, ranges = [], []
        for v, (flip, factor) in enumerate(variants):
            variant = tf.constant(flip_width(images) if flip else images)
            per_layer = []
            for number in range(len(self.layers)):
                run = v * len(self.layers) + number

                def scaled(fraction: float, run: int = run) -> None:
                    report((run + fraction) / runs)

                first = self._features(variant, tf.constant(factor, tf.float32), number)
                if not chosen:  # the original images' targets, for every variant and layer
                    chosen = {
                        k: first[k] for k in ("targets", "outputs", "predicted", "predicted_output")
                    }
                    selected = first["selected"].numpy()
                    facts = [ChannelFacts([int(k) for k in selected[b]]) for b in range(real)]
                layer = self._layer_maps(
                    variant, factor, first, chosen["targets"], number, real, scaled
                )
                per_layer.append(layer["maps"])
                if v == 0:  # the unnormalised maps' ranges on the original images
                    ranges.append(layer["scales"])
            combined = combine_layers(per_layer)
            per_variant.append(tf.reverse(combined, [3]) if flip else combined)
        maps = tf.add_n(per_variant) / len(per_variant)
        scales = tf.add_n(ranges) / len(ranges)  # the mean over layers
        result = {**chosen, "maps": maps, "scales": scales}
        return explanations_from(result, self.kind, real, facts)

    def _layer_maps(
        self,
        images: Any,
        factor: float,
        first: dict[str, Any],
        targets: Any,
        number: int,
        real: int,
        report: Any,
    ) -> Any:
        """Normalized maps (B, T, h, w) and their ranges (B, T) of one layer for one variant of
        the images (the first ``real`` are scored, the padding's scores stay 0)."""
        tf, _ = tf_and_keras()
        selected = first["selected"].numpy()
        used = selected.shape[1]
        rows = np.repeat(np.arange(real), used)
        pairs = np.stack([rows, selected[:real].reshape(-1)], axis=1).astype(np.int32)
        scores = np.zeros((len(selected) * used, self.top_k), dtype=np.float32)
        factor_t = tf.constant(factor, tf.float32)
        for chunk in chunks(len(pairs), self.batching.evaluations):
            result = self._scored(
                images,
                first["features"],
                factor_t,
                targets,
                tf.constant(pairs[chunk.index]),
                number,
            )
            scores[chunk.index[: chunk.real]] = result.numpy()[: chunk.real]
            report(chunk.done)
        scores = scores.reshape(len(selected), used, self.top_k)
        reference = gather_targets(first["logits"], targets)
        return self._combine(first["features"], first["selected"], tf.constant(scores), reference)

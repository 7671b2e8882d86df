"""Activation maximisation: the input a class (or a filter) responds to most, by gradient ascent.

Erhan, Bengio, Courville & Vincent, "Visualizing Higher-Layer Features of a Deep Network" (2009);
Olah, Mordvintsev & Schubert, "Feature Visualization", Distill 2017 (the regularisers and the
parameterisation used here); tf-keras-vis' ``ActivationMaximization`` (the Keras precedent).

Each target t (a class, or a filter of a layer) gets its own image, optimised from noise to
maximise its objective::

    class c:             S_t(x) = logit_c(x)                 (before a final softmax / sigmoid)
    filter f of layer L: S_t(x) = mean over positions of A_L(x)[..., f]

    loss(p) = -S_t(T(x(p))) + tv * TV(x(p)) + l2 * mean((x(p) - 1/2)^2)

- Parameterisation x(p) (Olah et al., section "Preconditioning and Parameterization"): p is a
  Fourier spectrum per colour channel, scaled by 1 / max(|frequency|, 1 / max(h, w)) (so all
  frequencies start with about equal energy and low ones are not drowned by pixel noise); its
  inverse real FFT, divided by 4, is mixed by Lucid's ImageNet colour-correlation matrix
  (decorrelated colour; one-channel models skip it) and squashed by a sigmoid into [0, 1];
  x * 255 is the raw image the model's preprocessing sees. The spectrum starts as N(0, 0.01^2)
  noise drawn from ``stateless_normal`` keyed by (``--seed``, target number): the same start for
  a target whatever the batch.
- Transformation robustness T (a fresh random draw each step, keyed by (seed, step, target)):
  one bilinear affine warp with reflected borders — a shift of up to +-J pixels (J =
  max(1, round(min(h, w) / 28)): 8 at 224, as Lucid's jitter), a rotation of up to +-5 degrees
  and a scale in [0.95, 1.05].
- Penalties on the [0, 1] image: total variation TV = mean |x[i+1, j] - x[i, j]| +
  mean |x[i, j+1] - x[i, j]| (``--tv``) and an L2 pull towards mid-gray (``--l2``).
- Adam (learning rate ``--lr``, betas 0.9 / 0.999), written out inside the compiled step: the
  tape watches only the spectrum, never the model's weights (the convention of
  ``methods/gradients.py``), and every gradient is taken inside a compiled function.

Where this differs from tf-keras-vis: it optimises raw pixels directly (``input_range=(0, 255)``)
with Jitter, Rotate2D, TotalVariation2D and a norm penalty, without the Fourier / decorrelated
parameterisation; the results here look smoother for the same number of steps. ``--size``
optimises at another size than the model's input (the image is resized bilinearly before the
model sees it), for dynamic-size models or to look at a larger canvas.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from cnnvis_cli.core.adapter import LayerInfo, ModelAdapter
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.core.tracing import Compiled
from cnnvis_cli.errors import ModelError

# Lucid's square root of ImageNet's colour correlation (rows: R, G, B), normalised so its
# largest column norm is 1 (Olah et al., "Feature Visualization", decorrelated colour).
COLOR_CORRELATION_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)
COLOR_MIX = COLOR_CORRELATION_SQRT / np.linalg.norm(COLOR_CORRELATION_SQRT, axis=0).max()
INIT_STD = 0.01
MAX_DEGREES = 5.0
SCALES = (0.95, 1.05)
BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


def parse_filters(text: str, count: int | None = None) -> list[int]:
    """``"0-15"``, ``"3"``, ``"0,2,5-7"`` -> filter indices, in order, without repeats.

    ValueError (naming ``--filters``) for bad syntax, an empty range, or an index >= ``count``.
    """
    chosen: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise ValueError(f"--filters: cannot read {part!r}; use e.g. 0-15 or 0,3,5-7")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise ValueError(f"--filters: empty range {part!r}")
        chosen.extend(i for i in range(first, last + 1) if i not in chosen)
    if count is not None:
        outside = [i for i in chosen if i >= count]
        if outside:
            raise ValueError(
                f"--filters: filter {outside[0]} is out of range: the layer has {count} "
                f"filters (0..{count - 1})"
            )
    return chosen


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` or ``"N"`` (square) -> (height, width); ValueError naming ``--size``."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", str(text))
    if not match:
        raise ValueError(f"--size: cannot read {text!r}; use HxW, e.g. 224x224")
    height = int(match.group(1))
    width = int(match.group(2)) if match.group(2) else height
    if not (8 <= height <= 2048 and 8 <= width <= 2048):
        raise ValueError(f"--size: each side must be within 8..2048, got {height}x{width}")
    return height, width


@dataclass(frozen=True)
class MaximizeSettings:
    """How the optimisation runs (the command's options)."""

    steps: int = 200
    seed: int = 0
    size: tuple[int, int] | None = None  # None: the model's input size (224 x 224 if dynamic)
    lr: float = 0.05
    tv: float = 0.05
    l2: float = 0.05
    batch: int = 8  # targets optimised together

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {self.steps}")
        if self.batch < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch}")
        for name in ("lr", "tv", "l2"):
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                raise ValueError(f"--{name} must be a finite number > 0, got {value}")


@dataclass(frozen=True)
class Target:
    """One thing to visualise: a class, or a filter of a layer."""

    index: int  # class index or filter index
    label: str  # for file names and tiles: "class 3 (cross)", "conv2 filter 5"
    stem: str  # file name stem


@dataclass
class Visualization:
    """The optimised image of one target and its objective before and after."""

    target: Target
    image: np.ndarray  # (h, w, c) uint8
    start_score: float
    final_score: float


@dataclass
class Objective:
    """What is maximised: class logits, or a layer's filters."""

    kind: str  # "class" | "filter"
    targets: list[Target]
    layer: LayerInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def class_objective(adapter: ModelAdapter, specs: list[str]) -> Objective:
    """Targets for ``--class`` specs (indices or names); ModelError for unknown ones."""
    targets = []
    for spec in specs:
        index = adapter.class_index(spec)
        name = adapter.class_name(index)
        label = f"class {index}" + (f" ({name})" if name else "")
        stem = f"class_{index:03d}" + (f"_{_safe(name)}" if name else "")
        targets.append(Target(index, label, stem))
    return Objective("class", targets)


def find_layer(adapter: ModelAdapter, name: str) -> LayerInfo:
    """A layer by path or bare name whose output has a channel axis; ModelError otherwise."""
    matches = [info for info in adapter.all_layers if name in (info.path, info.layer.name)]
    if len(matches) > 1:
        paths = ", ".join(info.path for info in matches)
        raise ModelError(f"layer name {name!r} is ambiguous ({paths}); give the full path")
    if not matches:
        adapter.resolve_layer(name)  # raises, naming the closest layers
    info = matches[0]
    shape = info.output_shape
    if shape is None or len(shape) < 2 or not shape[-1]:
        raise ModelError(f"layer {info.path!r} has output shape {shape}; it has no filters")
    return info


def filter_objective(adapter: ModelAdapter, layer: str, filters: str) -> Objective:
    """Targets for ``--layer L --filters SPEC``; ModelError / ValueError for bad ones."""
    info = find_layer(adapter, layer)
    count = int(info.output_shape[-1])
    indices = parse_filters(filters, count)
    stem = _safe(info.path)
    targets = [Target(f, f"{info.path} filter {f}", f"{stem}_filter_{f:04d}") for f in indices]
    return Objective("filter", targets, info, {"filters_in_layer": count})


def fourier_scale(height: int, width: int) -> np.ndarray:
    """(h, w // 2 + 1) float32 spectrum scale 1 / max(|freq|, 1 / max(h, w)) * sqrt(h w)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    frequency = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(frequency, 1.0 / max(height, width))
    return (scale * np.sqrt(height * width)).astype(np.float32)


class Maximizer:
    """Optimises one image per target for an adapter's model (gradients only when compiled)."""

    def __init__(
        self, adapter: ModelAdapter, objective: Objective, settings: MaximizeSettings
    ) -> None:
        if adapter.forward_only:
            raise ModelError(
                f"{adapter.source}: a SavedModel directory exposes forward passes only (no "
                "layers or gradients), so activation maximisation cannot run on it; load the "
                ".keras file the model was saved from"
            )
        self.adapter = adapter
        self.objective = objective
        self.settings = settings
        size = settings.size or adapter.input_size or (224, 224)
        self.height, self.width = int(size[0]), int(size[1])
        self.channels = adapter.channels
        self.scale = fourier_scale(self.height, self.width)
        self.jitter = max(1, round(min(self.height, self.width) / 28))
        self._step = Compiled(self._step_fn)
        self._score = Compiled(self._score_fn)
        self.functions = [self._step, self._score]

    def trace_counts(self) -> dict[str, int]:
        return {f.python_function.__name__.strip("_"): f.traces for f in self.functions}

    # -- the image as a function of the spectrum (inside compiled functions) -------------------

    def initial(self, numbers: np.ndarray) -> Any:
        """Spectra (n, 2, c, h, w // 2 + 1) for target numbers (n,), seeded per target."""
        tf, _ = tf_and_keras()
        shape = [2, self.channels, *self.scale.shape]
        rows = [
            tf.random.stateless_normal(
                shape, seed=[self.settings.seed, int(n)], stddev=INIT_STD, alg="philox"
            )
            for n in numbers
        ]
        return tf.stack(rows)

    def image(self, spectrum: Any) -> Any:
        """(n, h, w, c) images in [0, 1] from spectra."""
        tf, _ = tf_and_keras()
        scaled = tf.complex(spectrum[:, 0], spectrum[:, 1]) * tf.cast(self.scale, tf.complex64)
        pixels = tf.signal.irfft2d(scaled, fft_length=[self.height, self.width]) / 4.0
        pixels = tf.transpose(pixels, [0, 2, 3, 1])  # (n, h, w, c)
        if self.channels == 3:
            pixels = tf.einsum("nhwc,dc->nhwd", pixels, tf.constant(COLOR_MIX))
        return tf.sigmoid(pixels)

    def transform(self, images: Any, numbers: Any, step: Any) -> Any:
        """A random shift / rotation / scale of each image, keyed by (seed, step, number)."""
        tf, _ = tf_and_keras()
        seed = tf.constant(self.settings.seed, tf.int64)

        def draw(number: Any) -> Any:
            key = tf.stack([seed, tf.cast(step, tf.int64) * 1_000_003 + tf.cast(number, tf.int64)])
            return tf.random.stateless_uniform([4], seed=key, minval=-1.0, maxval=1.0)

        u = tf.map_fn(draw, numbers, fn_output_signature=tf.float32)  # (n, 4)
        angle = u[:, 0] * (MAX_DEGREES * math.pi / 180.0)
        low, high = SCALES
        zoom = low + (u[:, 1] + 1.0) / 2.0 * (high - low)
        shift_x, shift_y = u[:, 2] * self.jitter, u[:, 3] * self.jitter
        cx, cy = (self.width - 1) / 2.0, (self.height - 1) / 2.0
        cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
        # output pixel (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2)
        a2 = cx - cos * cx + sin * cy + shift_x
        b2 = cy - sin * cx - cos * cy + shift_y
        zeros = tf.zeros_like(cos)
        matrix = tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images,
            transforms=matrix,
            output_shape=tf.constant([self.height, self.width], tf.int32),
            fill_value=tf.constant(0.0),
            interpolation="BILINEAR",
            fill_mode="REFLECT",
        )

    def scores(self, images01: Any, indices: Any) -> Any:
        """(n,) objective of each [0, 1] image for its target index (class or filter)."""
        tf, _ = tf_and_keras()
        raw = images01 * 255.0
        size = self.adapter.input_size
        if size is not None and tuple(size) != (self.height, self.width):
            raw = tf.image.resize(raw, size, method="bilinear")
        if self.objective.kind == "class":
            forward = self.adapter.forward(raw)
            return tf.gather(tf.cast(forward.logits, tf.float32), indices, batch_dims=1)
        forward = self.adapter.forward(raw, self.objective.layer)
        features = tf.cast(forward.features, tf.float32)
        axes = list(range(1, len(features.shape) - 1))
        pooled = tf.reduce_mean(features, axis=axes) if axes else features  # (n, channels)
        return tf.gather(pooled, indices, batch_dims=1)

    # -- compiled functions ---------------------------------------------------------------------

    def _step_fn(
        self, spectrum: Any, m: Any, v: Any, t: Any, numbers: Any, indices: Any, step: Any
    ) -> Any:
        """One Adam step of gradient ascent: new (spectrum, m, v) and the scores (n,)."""
        tf, _ = tf_and_keras()
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(spectrum)
            images = self.image(spectrum)
            scores = self.scores(self.transform(images, numbers, step), indices)
            dy = images[:, 1:] - images[:, :-1]
            dx = images[:, :, 1:] - images[:, :, :-1]
            tv = tf.reduce_mean(tf.abs(dy), axis=[1, 2, 3]) + tf.reduce_mean(
                tf.abs(dx), axis=[1, 2, 3]
            )
            l2 = tf.reduce_mean(tf.square(images - 0.5), axis=[1, 2, 3])
            loss = tf.reduce_sum(-scores + self.settings.tv * tv + self.settings.l2 * l2)
        gradient = tape.gradient(loss, spectrum)
        beta1, beta2 = BETAS
        m = beta1 * m + (1.0 - beta1) * gradient
        v = beta2 * v + (1.0 - beta2) * tf.square(gradient)
        m_hat = m / (1.0 - tf.pow(beta1, t))
        v_hat = v / (1.0 - tf.pow(beta2, t))
        spectrum = spectrum - self.settings.lr * m_hat / (tf.sqrt(v_hat) + ADAM_EPSILON)
        return spectrum, m, v, scores

    def _score_fn(self, spectrum: Any, indices: Any) -> Any:
        """Untransformed images (n, h, w, c) in [0, 1] and their scores (n,)."""
        images = self.image(spectrum)
        return images, self.scores(images, indices)

    # -- the optimisation -----------------------------------------------------------------------

    def run(self, progress: Callable[[int], None] | None = None) -> list[Visualization]:
        """Optimise every target, ``settings.batch`` at a time (the last group padded)."""
        tf, _ = tf_and_keras()
        from cnnvis_cli.core.batching import chunks

        targets = self.objective.targets
        results: list[Visualization] = []
        for chunk in chunks(len(targets), self.settings.batch):
            numbers = chunk.index.astype(np.int32)
            indices = tf.constant([targets[i].index for i in numbers], tf.int32)
            numbers_t = tf.constant(numbers)
            spectrum = self.initial(numbers)
            _, start = self._score(spectrum, indices)
            m = tf.zeros_like(spectrum)
            v = tf.zeros_like(spectrum)
            for step in range(self.settings.steps):
                t = tf.constant(step + 1, tf.float32)
                spectrum, m, v, _ = self._step(
                    spectrum, m, v, t, numbers_t, indices, tf.constant(step, tf.int32)
                )
                if progress is not None:
                    progress(1)
            images, final = self._score(spectrum, indices)
            pixels = np.clip(np.rint(images.numpy() * 255.0), 0, 255).astype(np.uint8)
            for row in range(chunk.real):
                results.append(
                    Visualization(
                        targets[int(numbers[row])],
                        pixels[row],
                        float(start.numpy()[row]),
                        float(final.numpy()[row]),
                    )
                )
        return results

    def total_steps(self) -> int:
        """Progress units: steps x groups of targets."""
        groups = math.ceil(len(self.objective.targets) / self.settings.batch)
        return groups * self.settings.steps


def tile(visualization: Visualization, side: int = 160) -> np.ndarray:
    """The image scaled to ``side`` pixels high (nearest: pixels stay crisp) under its label."""
    image = visualization.image
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    width = max(1, round(image.shape[1] * side / image.shape[0]))
    scaled = cv2.resize(image, (width, side), interpolation=cv2.INTER_NEAREST)
    strip = np.full((22, width, 3), 255, np.uint8)
    text = visualization.target.label.encode("ascii", "replace").decode()
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.4
    while len(text) > 1 and cv2.getTextSize(text, font, scale, 1)[0][0] > width - 4:
        text = text[:-2] + "~"
    cv2.putText(strip, text, (2, 15), font, scale, (20, 20, 20), 1, cv2.LINE_AA)
    return np.vstack([strip, scaled])


def grid_image(visualizations: list[Visualization], columns: int = 8, gap: int = 4) -> np.ndarray:
    """Labelled tiles in rows of ``columns`` on white (RGB uint8)."""
    tiles = [tile(v) for v in visualizations]
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    tile_h = max(t.shape[0] for t in tiles)
    tile_w = max(t.shape[1] for t in tiles)
    canvas = np.full(
        (rows * tile_h + (rows + 1) * gap, columns * tile_w + (columns + 1) * gap, 3), 255, np.uint8
    )
    for number, image in enumerate(tiles):
        row, col = divmod(number, columns)
        y, x = gap + row * (tile_h + gap), gap + col * (tile_w + gap)
        canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
    return canvas

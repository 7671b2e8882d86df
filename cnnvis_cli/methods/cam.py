"""The class-activation-map family's shared machinery: layers, their features and gradients.

For the feature maps A^k (k = 1..K) of a convolutional layer and the target's score y^c (the
logit, before a softmax or sigmoid), with g^k = d y^c / d A^k, each CAM method defines the
*weighted activations* ``weighted(A, g)`` (B, h, w, K) whose channel sum is its map (pytorch-grad-
cam's ``BaseCAM`` is the model for this split)::

    L^c = ReLU( sum_k weighted_k )                     (default)
    L^c = ReLU( first_component(weighted) )            (--eigen-smooth)

This class captures the layer(s) (``--layer``, or the last layer whose output keeps the image's
axes), takes one gradient per target and layer inside one compiled function, and min-max
normalizes each map to [0, 1] with an epsilon (an all-zero map stays zero).

Options every CAM method shares (pytorch-grad-cam's ``aug_smooth``, ``eigen_smooth`` and
``target_layers``):

- ``--eigen-smooth``: the map is the projection of the (h*w x K) weighted-activation matrix on
  its first right singular vector instead of its row sums (see :func:`first_component` for the
  sign rule; unlike pytorch-grad-cam's ``get_2d_projection`` the matrix is *not* mean-centred).
- ``--layer`` repeated: one map per layer, each ReLU'd and normalized at its own resolution,
  resized bilinearly (half-pixel centres) to the largest layer's resolution (most positions),
  averaged and normalized again (pytorch-grad-cam resizes to the input's resolution instead; the
  renderer upsamples our map to the image afterwards).
- ``--aug-smooth``: test-time augmentation. Four variants of each image's *model input*
  (after preprocessing) X: {X, flip(X), 1.1 X, 1.1 flip(X)} — a horizontal flip times a
  multiplicative factor 1.0 / 1.1, as pytorch-grad-cam's ``ttach`` ``HorizontalFlip`` x
  ``Multiply`` (which also uses 0.9: six variants there). Every variant explains the *original*
  image's targets (pytorch-grad-cam re-selects each variant's own top class); each variant's
  normalized map is flipped back when its input was flipped, and the result is the plain mean of
  the four maps (not renormalized, as pytorch-grad-cam).

Conventions (where implementations differ): ReLU is applied at the layer's resolution, *before*
upsampling; the map is then upsampled to the input image's own resolution by the renderer,
bilinearly with half-pixel centres (OpenCV ``INTER_LINEAR``; ``--upsample bicubic|corners``
reproduces Xplique's bicubic and tf-keras-vis' align-corners resizing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cnnvis_cli.core.adapter import LayerInfo, ModelAdapter
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.methods.base import BatchMethod
from cnnvis_cli.methods.gradients import logit_gradients
from cnnvis_cli.methods.normalize import EPSILON, minmax_range_tf, normalize_minmax_tf
from cnnvis_cli.options import Options, option

AUGMENTATIONS: tuple[tuple[bool, float], ...] = (
    (False, 1.0),
    (True, 1.0),
    (False, 1.1),
    (True, 1.1),
)
"""``--aug-smooth``'s variants: (horizontal flip, factor on the model input)."""


def layer_names(layer: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """``--layer`` as a list without repeats (a single name is accepted); None when empty."""
    if layer is None:
        return None
    names = [layer] if isinstance(layer, str) else [str(name) for name in layer]
    names = list(dict.fromkeys(name for name in names if name))
    return names or None


@dataclass(frozen=True)
class LayerOptions(Options):
    """Options of a method that reads the feature maps of one or more layers."""

    layer: list[str] | None = option(
        None,
        "Layer for the map (a path through nested models, see `cnnvis layers`); repeat for "
        "several (their maps are averaged); default: the last layer whose output keeps the "
        "image's axes.",
        metavar="PATH",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer", layer_names(self.layer))


@dataclass(frozen=True)
class CAMOptions(LayerOptions):
    """A CAM method's options: layers and pytorch-grad-cam's two smoothings."""

    aug_smooth: bool = option(
        False,
        "Test-time augmentation: mean of the maps of 4 variants (horizontal flip x model input "
        "times 1.0 / 1.1), flipped back.",
    )
    eigen_smooth: bool = option(
        False,
        "First principal component of the weighted activations instead of their sum.",
    )


def resolve_layers(adapter: ModelAdapter, names: list[str] | None) -> list[LayerInfo]:
    """The layers named by ``--layer`` (or the automatic one), each once."""
    if not names:
        return [adapter.auto_layer()]
    layers = [adapter.resolve_layer(name) for name in names]
    return list({info.path: info for info in layers}.values())


def layer_params(layers: list[LayerInfo]) -> str | list[str]:
    """The summary's ``layer``: the path of one layer, or the list of several."""
    paths = [info.path for info in layers]
    return paths[0] if len(paths) == 1 else paths


def first_component(weighted: Any) -> Any:
    """(B, h, w, K) -> (B, h, w): each image's (h*w x K) matrix M projected on its first right
    singular vector v_1 (= u_1 s_1), signed so that the projection sums to >= 0.

    SVD leaves the sign of v_1 arbitrary (LAPACK builds differ: pytorch-grad-cam issue #315); the
    rule picks the direction the map mostly points to. M is not mean-centred (the Eigen-CAM
    paper's projection; pytorch-grad-cam's ``get_2d_projection`` centres the columns, which makes
    every projection sum to exactly 0, so no sign rule can tell its halves apart). For
    non-negative activations (after a ReLU) v_1 can be taken non-negative (Perron-Frobenius), and
    then the signed projection is itself >= 0.
    """
    tf, _ = tf_and_keras()
    weighted = tf.cast(weighted, tf.float32)
    shape = tf.shape(weighted)
    matrix = tf.reshape(weighted, [shape[0], shape[1] * shape[2], shape[3]])
    _, _, v = tf.linalg.svd(matrix, full_matrices=False)
    projection = tf.linalg.matvec(matrix, v[:, :, 0])  # (B, h*w)
    sign = tf.where(tf.reduce_sum(projection, axis=1, keepdims=True) < 0, -1.0, 1.0)
    return tf.reshape(projection * sign, shape[:3])


def normalize_maps(maps: Any) -> Any:
    """Min-max normalize (..., h, w) maps over their last two axes (TensorFlow)."""
    tf, _ = tf_and_keras()
    low = tf.reduce_min(maps, axis=(-2, -1), keepdims=True)
    high = tf.reduce_max(maps, axis=(-2, -1), keepdims=True)
    return (maps - low) / (high - low + EPSILON)


def combine_layers(maps: list[Any]) -> Any:
    """One normalized (B, K, H, W) map from per-layer normalized (B, K, h_l, w_l) maps: each
    resized bilinearly to the largest layer's (h_l * w_l) size, averaged, normalized."""
    tf, _ = tf_and_keras()
    if len(maps) == 1:
        return maps[0]
    sizes = tf.stack([tf.shape(m)[2:4] for m in maps])  # (L, 2)
    size = sizes[tf.argmax(sizes[:, 0] * sizes[:, 1])]
    resized = []
    for m in maps:
        channels_last = tf.transpose(m, (0, 2, 3, 1))
        up = tf.image.resize(channels_last, size, method="bilinear")
        resized.append(tf.transpose(up, (0, 3, 1, 2)))
    return normalize_maps(tf.add_n(resized) / len(resized))


def augment(inputs: Any, variants: tuple[tuple[bool, float], ...]) -> Any:
    """(V * B, h, w, c) model inputs: each variant (flip, factor) of (B, h, w, c) inputs."""
    tf, _ = tf_and_keras()
    return tf.concat(
        [factor * (tf.reverse(inputs, [2]) if flip else inputs) for flip, factor in variants],
        axis=0,
    )


def deaugment(maps: Any, variants: tuple[tuple[bool, float], ...]) -> Any:
    """The mean over variants of (V * B, K, h, w) maps, each flipped back when flipped."""
    tf, _ = tf_and_keras()
    parts = tf.split(maps, len(variants), axis=0)
    pairs = zip(parts, variants, strict=True)
    restored = [tf.reverse(part, [3]) if flip else part for part, (flip, _) in pairs]
    return tf.add_n(restored) / len(restored)


class BaseCAM(BatchMethod):
    """A class activation map from layer features A and gradients g = dy^c/dA."""

    options_type = CAMOptions
    uses_gradients: ClassVar[bool] = True  # False: the map needs the features only

    def __init__(self, adapter: ModelAdapter, options: CAMOptions | None = None, **kwargs: Any):
        super().__init__(adapter, options, **kwargs)
        self.layers = resolve_layers(adapter, self.options.layer)
        self.layer = self.layers[0]

    def weighted(self, features: Any, gradients: Any) -> Any:
        """The weighted activations (B, h, w, k) whose channel sum is the map."""
        raise NotImplementedError(f"{self.name} defines cam() directly")

    def cam(self, features: Any, gradients: Any) -> Any:
        """The unnormalised map (B, h, w) from features and gradients (B, h, w, k), float32."""
        tf, _ = tf_and_keras()
        weighted = self.weighted(features, gradients)
        if self.options.eigen_smooth:
            return tf.nn.relu(first_component(weighted))
        return tf.nn.relu(tf.reduce_sum(weighted, axis=-1))

    def params(self) -> dict[str, Any]:
        return {**super().params(), "layer": layer_params(self.layers)}

    @property
    def variants(self) -> tuple[tuple[bool, float], ...]:
        return AUGMENTATIONS if self.options.aug_smooth else AUGMENTATIONS[:1]

    def compute(self, raw: Any) -> dict[str, Any]:
        """Normalised maps (B, K, h, w), their ranges (B, K) and the chosen targets."""
        tf, _ = tf_and_keras()
        raw = tf.convert_to_tensor(raw, tf.float32)
        batch = tf.shape(raw)[0]
        variants = self.variants
        inputs = augment(self.adapter.preprocess(raw), variants)

        def choose(forward: Any) -> Any:  # the original images' targets, for every variant
            return tf.tile(self.targets.select(forward.outputs[:batch]), [len(variants), 1])

        if self.uses_gradients:
            gradients, targets, forward = logit_gradients(
                self.adapter, inputs, choose, self.top_k, layer=self.layers, preprocessed=True
            )
        else:
            forward = self.adapter.forward(inputs, self.layers, preprocessed=True)
            targets, gradients = choose(forward), [None] * len(self.layers)
        per_layer, ranges = [], []
        for features, layer_gradients in zip(forward.features, gradients, strict=True):
            features = tf.cast(features, tf.float32)
            cams = [
                self.cam(features, None if layer_gradients is None else layer_gradients[:, k])
                for k in range(self.top_k)
            ]
            per_layer.append(tf.stack([normalize_minmax_tf(cam) for cam in cams], axis=1))
            ranges.append(tf.stack([minmax_range_tf(cam)[:batch] for cam in cams], axis=1))
        maps = deaugment(combine_layers(per_layer), variants)
        original = type(forward)(None, forward.logits[:batch], forward.outputs[:batch])
        # per target, the unnormalised map's range on the original images (the mean over layers)
        scales = tf.add_n(ranges) / len(ranges)
        return {"maps": maps, "scales": scales, **self.chosen(original, targets[:batch])}

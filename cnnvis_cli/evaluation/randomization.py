"""Model parameter randomisation on a clone: layer groups, seeded re-initialisation, restore.

Adebayo et al. ("Sanity Checks for Saliency Maps", NeurIPS 2018, section 3.1) re-initialise a
trained network's weights from the top (logits) down, one layer or block at a time ("cascading"),
or one at a time with the others left trained ("independent"). Here:

- **Groups**: the layers that hold weights, in call order through nested models
  (``ModelAdapter.all_layers``); each layer with a kernel (Conv*, Dense, depthwise and separable
  convolutions, Embedding) starts a group, and weighted layers without one (BatchNormalization
  and the other normalisations, PReLU, ...) join the group of the kernel layer before them — a
  convolution and its batch normalisation are re-initialised together. A group is named after
  its kernel layer. The cascade visits the groups top-down: ``groups[0]`` is the head.
- **Re-initialisation**: every variable gets fresh values from its layer's own initializer
  (``kernel_initializer``, ``bias_initializer``, ``depthwise_initializer``,
  ``pointwise_initializer``, ``gamma_initializer``, ``beta_initializer``,
  ``moving_mean_initializer``, ``moving_variance_initializer``, ...), re-created from its config
  with an integer seed derived from ``--seed`` and the variable's path, so a run is reproducible
  and each variable draws its own values. A batch normalisation therefore returns to gamma 1,
  beta 0, moving mean 0, moving variance 1. A float variable with no initializer falls back to
  Glorot-uniform (2-D and larger) or zeros, and is listed in :attr:`Randomizer.fallbacks`;
  integer (quantized) variables are left alone and listed in :attr:`Randomizer.skipped`.
- **The user's model is never touched**: the work happens on a clone
  (``keras.models.clone_model`` + ``set_weights``, or a second copy loaded from the file when the
  model cannot be cloned). The clone's weights are *assigned* in place for each step and the
  trained values assigned back afterwards, so functions compiled on the clone are traced once
  and see every step's weights (TensorFlow captures variables by reference).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnvis_cli.core.adapter import LayerInfo, ModelAdapter
from cnnvis_cli.core.tf import tf_and_keras
from cnnvis_cli.errors import ModelError

KERNEL_NAMES = frozenset({"kernel", "depthwise_kernel", "pointwise_kernel", "embeddings"})


@dataclass(frozen=True)
class Group:
    """Layers re-initialised together: a kernel layer and the weighted layers that follow it."""

    name: str  # the kernel layer's path
    layers: tuple[LayerInfo, ...]

    @property
    def paths(self) -> list[str]:
        return [info.path for info in self.layers]


def _short_name(variable: Any) -> str:
    return str(getattr(variable, "name", "")).split("/")[-1].split(":")[0]


def _has_kernel(layer: Any) -> bool:
    return any(_short_name(v) in KERNEL_NAMES for v in layer.weights)


def layer_groups(adapter: ModelAdapter) -> list[Group]:
    """The weighted layers in groups, top-down (the head's group first)."""
    groups: list[list[LayerInfo]] = []
    pending: list[LayerInfo] = []  # weighted layers before the first kernel layer
    for info in adapter.all_layers:
        if not list(getattr(info.layer, "weights", []) or []):
            continue
        if _has_kernel(info.layer):
            groups.append([*pending, info])
            pending = []
        elif groups:
            groups[-1].append(info)
        else:
            pending.append(info)
    if pending:
        groups.append(pending)
    named = []
    for members in groups:
        kernel = next((i for i in members if _has_kernel(i.layer)), members[0])
        named.append(Group(kernel.path, tuple(members)))
    return named[::-1]


def clone_adapter(
    adapter: ModelAdapter, reload: Callable[[], ModelAdapter] | None = None
) -> ModelAdapter:
    """An adapter over a copy of ``adapter.model`` with the same weights and settings.

    ``keras.models.clone_model`` + ``set_weights``; when the model cannot be cloned (a subclassed
    model, a layer that does not round-trip through its config), ``reload()`` loads a second copy.
    """
    _, keras = tf_and_keras()
    if adapter.forward_only:
        raise ModelError(
            f"{adapter.source}: a SavedModel directory exposes no layers or weights to "
            "randomise; load the .keras file the model was saved from"
        )
    try:
        model = keras.models.clone_model(adapter.model)
        model.set_weights(adapter.model.get_weights())
    except Exception as exc:  # Keras raises many types for models it cannot clone
        if reload is None:
            raise ModelError(
                f"{adapter.source}: cannot copy the model to randomise it "
                f"({type(exc).__name__}: {exc})"
            ) from None
        copy = reload()
        if copy.model is adapter.model:
            raise ModelError(f"{adapter.source}: the second copy is the same model") from None
        return copy
    return ModelAdapter(
        model,
        source=adapter.source,
        class_names=adapter.class_names,
        preprocess=adapter.preprocess_mode,
        preprocess_reason=adapter.preprocess_reason,
        output=adapter.output_index,
    )


def _initializer_for(layer: Any, variable: Any) -> Any:
    """The layer's initializer of ``variable`` (``<name>_initializer`` and its spellings)."""
    short = _short_name(variable)
    candidates = [f"{short}_initializer"]
    if short.endswith("_kernel"):
        candidates.append(f"{short[: -len('_kernel')]}_initializer")  # depthwise_kernel
    if short == "kernel":
        candidates.append("depthwise_initializer")  # DepthwiseConv2D names its kernel "kernel"
    for attribute in candidates:
        initializer = getattr(layer, attribute, None)
        if initializer is not None:
            return initializer
    return None


def variable_seed(seed: int, path: str) -> int:
    """A stable 31-bit seed for one variable: ``--seed`` mixed with the variable's path."""
    return (int(seed) * 1_000_003 + zlib.crc32(path.encode("utf-8"))) % (2**31 - 1)


def _seeded(initializer: Any, seed: int) -> Any:
    """A copy of ``initializer`` with an integer seed (deterministic ones are returned as is)."""
    try:
        config = initializer.get_config()
    except (AttributeError, NotImplementedError):
        return initializer
    if "seed" not in config:
        return initializer
    return type(initializer).from_config({**config, "seed": seed})


class Randomizer:
    """Re-initialised values for the groups of a clone, and switching between them.

    ``apply(indices)`` makes exactly the groups in ``indices`` random and every other group
    trained (assigning only what changes); ``restore()`` makes them all trained again.
    """

    def __init__(self, groups: list[Group], seed: int, needed: Iterable[int] | None = None):
        _, keras = tf_and_keras()
        self.groups = groups
        self.seed = int(seed)
        self.fallbacks: list[str] = []
        self.skipped: list[str] = []
        self._trained: dict[int, list[tuple[Any, np.ndarray]]] = {}
        self._random: dict[int, list[np.ndarray]] = {}
        self._state: set[int] = set()
        for index in sorted(set(range(len(groups)) if needed is None else needed)):
            trained, random = [], []
            for info in groups[index].layers:
                for variable in info.layer.weights:
                    path = str(getattr(variable, "path", None) or f"{info.path}/{variable.name}")
                    dtype = np.dtype(keras.backend.standardize_dtype(variable.dtype))
                    if not np.issubdtype(dtype, np.floating):
                        self.skipped.append(path)
                        continue
                    values = self._fresh(info.layer, variable, path, dtype)
                    trained.append((variable, np.array(keras.ops.convert_to_numpy(variable))))
                    random.append(values)
            self._trained[index] = trained
            self._random[index] = random

    def _fresh(self, layer: Any, variable: Any, path: str, dtype: np.dtype) -> np.ndarray:
        _, keras = tf_and_keras()
        shape = tuple(int(d) for d in variable.shape)
        initializer = _initializer_for(layer, variable)
        if initializer is None:
            self.fallbacks.append(path)
            if len(shape) < 2:
                return np.zeros(shape, dtype)
            initializer = keras.initializers.GlorotUniform()
        initializer = _seeded(initializer, variable_seed(self.seed, path))
        values = initializer(shape, dtype=str(dtype))
        return np.asarray(keras.ops.convert_to_numpy(values), dtype=dtype).reshape(shape)

    def apply(self, indices: Iterable[int]) -> None:
        """Make the groups in ``indices`` random and all others trained."""
        wanted = set(indices)
        unknown = wanted - set(self._random)
        if unknown:
            raise ValueError(f"groups {sorted(unknown)} were not prepared")
        for index in sorted(self._state - wanted):
            for variable, values in self._trained[index]:
                variable.assign(values)
        for index in sorted(wanted - self._state):
            for (variable, _), values in zip(
                self._trained[index], self._random[index], strict=True
            ):
                variable.assign(values)
        self._state = wanted

    def restore(self) -> None:
        """Every group back to its trained values."""
        self.apply(())

    @property
    def random_groups(self) -> set[int]:
        return set(self._state)

"""The Python API: explanations in memory, for notebooks and scripts.

::

    import cnnvis_cli as cnnvis

    results = cnnvis.explain("model.keras", ["cat.jpg", "dog.png"], method="gradcam", top_k=2)
    results[0].maps[0]            # H x W float32 in [0, 1], at cat.jpg's own resolution
    picture = cnnvis.overlay("cat.jpg", results[0].maps[0])   # H x W x 3 uint8 RGB

``model`` is a path, ``keras:NAME`` or a loaded Keras model; ``images`` are paths or arrays
(H x W x 3 RGB, uint8 or floats on the 0..255 scale). The maps are exactly what ``--save-raw``
writes for the same inputs. Repeated calls with the same model object (or path, unchanged on
disk) and the same method settings reuse the loaded model and its traced functions.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAX_CACHED = 8


@dataclass
class Result:
    """One input's explanation, at the input's own resolution."""

    input: str | None  # the path, or None for an array
    maps: list[np.ndarray]  # one per target: H x W heatmaps, or H x W x C gradients
    targets: list[int]
    class_names: list[str | None]
    scores: list[float]  # the model's output per target (a probability for softmax heads)
    predicted: tuple[int, float] | None  # the model's own top-1 class and output
    kind: str  # heatmap | signed | gradient
    facts: dict[str, Any] = field(default_factory=dict)


_lock = threading.Lock()
_adapters: dict[Any, Any] = {}
_methods: dict[Any, Any] = {}


def _model_key(model: Any) -> Any:
    if isinstance(model, (str, Path)):
        spec = str(model)
        path = Path(spec)
        if path.exists():
            stat = path.stat()
            return ("file", str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        return ("spec", spec)
    return ("object", id(model))


def _adapter(model: Any, preprocess: str, class_names: Any, output: Any) -> Any:
    from cnnvis_cli.core.adapter import ModelAdapter
    from cnnvis_cli.core.loading import load_model, read_class_names

    key = (_model_key(model), preprocess, str(class_names), output)
    with _lock:
        cached = _adapters.get(key)
    if cached is not None and (key[0][0] != "object" or cached.model is model):
        return cached
    if isinstance(model, (str, Path)):
        adapter = load_model(model, class_names=class_names, preprocess=preprocess, output=output)
    else:
        names = None
        if class_names is not None:
            names = (
                list(class_names)
                if not isinstance(class_names, (str, Path))
                else read_class_names(Path(class_names))
            )
        adapter = ModelAdapter(model, class_names=names, preprocess=preprocess, output=output)
    with _lock:
        if len(_adapters) >= MAX_CACHED:
            _adapters.pop(next(iter(_adapters)))
        _adapters[key] = adapter
    return adapter


def _method(adapter: Any, name: str, class_index: Any, top_k: int, batching: Any, options: dict):
    from cnnvis_cli.core.targets import Targets
    from cnnvis_cli.methods import get_method

    cls = get_method(name)
    index = adapter.class_index(str(class_index)) if class_index is not None else None
    key = (id(adapter), name, index, top_k, batching, tuple(sorted(options.items())))
    with _lock:
        cached = _methods.get(key)
    if cached is not None and cached.adapter is adapter:
        return cached
    targets = Targets(index, 1 if index is not None else top_k)
    method = cls(adapter, cls.options_type(**options), targets=targets, batching=batching)
    with _lock:
        if len(_methods) >= MAX_CACHED:
            _methods.pop(next(iter(_methods)))
        _methods[key] = method
    return method


def _load_image(image: Any) -> tuple[str | None, np.ndarray]:
    from cnnvis_cli.core.decode import decode_image

    if isinstance(image, (str, Path)):
        return str(image), decode_image(Path(image))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"an image array must be H x W x 3 (or H x W), got {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return None, np.clip(np.rint(array.astype(np.float64)), 0, 255).astype(np.uint8)


def explain(
    model: Any,
    images: Any,
    method: str = "gradcam",
    *,
    class_index: int | str | None = None,
    top_k: int = 1,
    batch_size: int = 16,
    eval_batch: int = 64,
    preprocess: str = "auto",
    class_names: Sequence[str] | str | Path | None = None,
    output: str | int | None = None,
    upsample: str = "bilinear",
    max_size: int = 1024,
    **options: Any,
) -> list[Result]:
    """Explain ``images`` with ``method``; one :class:`Result` per image, in order.

    ``options`` are the method's own (e.g. ``layer="conv5"``, ``samples=50``, ``patch=16``).
    """
    from cnnvis_cli.core.batching import Batching
    from cnnvis_cli.core.decode import to_model_tensor
    from cnnvis_cli.output.render import map_at_size

    if isinstance(images, (str, Path, np.ndarray)):
        images = [images]
    loaded = [_load_image(image) for image in images]
    adapter = _adapter(model, preprocess, class_names, output)
    step = batch_size if adapter.input_size is not None else 1
    explainer = _method(adapter, method, class_index, top_k, Batching(step, eval_batch), options)
    results: list[Result] = []
    for start in range(0, len(loaded), step):
        chunk = loaded[start : start + step]
        tensors = np.stack(
            [
                to_model_tensor(rgb, adapter.input_size, adapter.channels, max_size)
                for _, rgb in chunk
            ]
        )
        for (source, rgb), explanation in zip(chunk, explainer.explain(tensors), strict=True):
            height, width = rgb.shape[:2]
            kind = explanation.kind
            maps = [map_at_size(m, height, width, kind, upsample) for m in explanation.maps]
            results.append(
                Result(
                    input=source,
                    maps=maps,
                    targets=list(explanation.targets),
                    class_names=[adapter.class_name(c) for c in explanation.targets],
                    scores=list(explanation.outputs),
                    predicted=explanation.predicted,
                    kind=explanation.kind,
                    facts=explanation.facts.to_json() if explanation.facts else {},
                )
            )
    return results


def overlay(
    image: Any,
    heatmap: np.ndarray,
    *,
    kind: str = "heatmap",
    alpha: float = 0.4,
    colormap: str = "jet",
    upsample: str = "bilinear",
) -> np.ndarray:
    """The picture cnnvis writes for ``heatmap`` over ``image`` (a path or an RGB array)."""
    from cnnvis_cli.output.render import render_map

    _, rgb = _load_image(image)
    return render_map(rgb, heatmap, kind, alpha=alpha, colormap=colormap, upsample=upsample)[1]

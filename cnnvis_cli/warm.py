"""Warm state the daemon keeps across commands: loaded models and built explanation methods.

Inert unless ``enable()`` was called, which only the daemon does: ``cached_model`` and
``cached_method`` then simply call through, so an in-process run is unchanged. The runner calls
them where it loads the model and where it builds the method.

Models are keyed by what the load depends on: the model argument as given (it becomes the
adapter's ``source``), the resolved paths and load options, and the identity of every file
involved (the model file or SavedModel folder, the class-names file or sidecar, the
custom-objects file, a weights file). A held model is reused only when the SHA-256 of those files
still equals the one taken when it was loaded (about 11 ms for MobileNetV2's 14 MB on this
machine), so a rewritten model is reloaded even if its size and mtime were kept, and a merely
touched one is not. Models are evicted least recently used first beyond ``max_models`` or when
their weights exceed ``max_bytes`` together; one bigger than ``max_bytes`` is not kept at all.

Methods (which hold the traced ``tf.function``s) are keyed by their model entry, class and
constructor arguments. The method classes keep no per-run state (only compiled functions and
options; the layer patches they apply during a call are undone by context managers), and for a
model with a fixed input size every call of a given method object sees one input shape, so a
reused object computes exactly what a new one would. Models with a dynamic input size retrace
per image size and keep their trace history, so their methods are never reused. A command that
was interrupted drops the methods it used.

Every method runs in traced functions, in-process and in the daemon alike, and a reused method
object sees the same input shapes as a new one would (the images-per-step size is part of its
key), so it runs the same graph: outputs are byte-identical to an in-process run.

Per command the daemon also resets Keras' automatic layer-name counters (a Keras application
built twice in one process gets ``global_average_pooling2d_1``) and restores Keras' global
custom-object registry afterwards, so each command sees a fresh process' naming and registry.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import hashlib
import math
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_MODELS = 3
DEFAULT_MAX_BYTES = 4 * 1024**3
METHODS_PER_MODEL = 8
_CHUNK = 1 << 20

_cache: WarmCache | None = None


def enable(
    max_models: int = DEFAULT_MAX_MODELS, max_bytes: int | None = DEFAULT_MAX_BYTES
) -> WarmCache:
    """Turn the process-wide cache on (the daemon calls this once, after importing TF)."""
    global _cache
    _cache = WarmCache(max_models=max_models, max_bytes=max_bytes)
    return _cache


def disable() -> None:
    global _cache
    _cache = None


def active() -> WarmCache | None:
    return _cache


def cached_model(loader: Callable[..., Any], spec: Any, /, **options: Any) -> Any:
    """``loader(spec, **options)``, or the adapter a previous identical load returned."""
    if _cache is None:
        return loader(spec, **options)
    return _cache.model(loader, spec, options)


def cached_method(cls: Callable[..., Any], adapter: Any, /, **options: Any) -> Any:
    """``cls(adapter, **options)``, or the object built for the same adapter and options."""
    if _cache is None:
        return cls(adapter, **options)
    return _cache.method(cls, adapter, options)


def begin_command() -> None:
    if _cache is not None:
        _cache.begin_command()


def end_command(interrupted: bool = False) -> None:
    if _cache is not None:
        _cache.end_command(interrupted)


def snapshot() -> dict[str, Any] | None:
    return None if _cache is None else _cache.snapshot()


# -- file identity ---------------------------------------------------------------------------


def _existing_path(value: Any) -> str | None:
    if isinstance(value, (str, os.PathLike)) and str(value) and os.path.exists(value):
        return os.path.realpath(value)
    return None


def stat_identity(path: str) -> tuple:
    """Size, mtime, ctime, inode of a file (of every file below it for a folder)."""
    try:
        info = os.stat(path)
    except OSError:
        return (path, None)
    if not stat.S_ISDIR(info.st_mode):
        return (path, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)
    items = []
    for folder, subfolders, files in os.walk(path):
        subfolders.sort()
        for name in sorted(files):
            items.append(stat_identity(os.path.join(folder, name)))
    return (path, "dir", tuple(items))


def _hash_file(digest: Any, path: str, buffer: bytearray) -> None:
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])


def content_digest(paths: list[str]) -> str:
    """SHA-256 over the files (recursively for folders), their names and which are missing."""
    digest = hashlib.sha256()
    buffer = bytearray(_CHUNK)
    for path in paths:
        digest.update(f"\0{path}\0".encode())
        if os.path.isdir(path):
            for folder, subfolders, files in os.walk(path):
                subfolders.sort()
                for name in sorted(files):
                    full = os.path.join(folder, name)
                    digest.update(f"\0{os.path.relpath(full, path)}\0".encode())
                    _hash_file(digest, full, buffer)
        elif os.path.isfile(path):
            _hash_file(digest, path, buffer)
        else:
            digest.update(b"\0missing\0")
    return digest.hexdigest()


def _freeze(value: Any) -> Any:
    """A hashable, type-tagged form of an option value (1, 1.0 and True stay distinct)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if isinstance(value, os.PathLike):
        return ("path", os.fspath(value))
    if value is None or isinstance(value, (bool, int, float, str)):
        return (type(value).__name__, value)
    return (type(value).__name__, repr(value))


def _sidecar(spec: Any) -> str | None:
    """The class-names file ``load_model`` would pick up beside the model file."""
    from pathlib import Path

    from cnnvis_cli.core.loading import sidecar_class_names

    found = sidecar_class_names(Path(spec))
    return os.path.realpath(found) if found is not None else None


def model_key(spec: Any, options: dict[str, Any]) -> tuple[tuple, list[str]]:
    """``(key, files)``: what a load depends on, and the files whose content must not change."""
    files: list[str] = []
    spec_path = _existing_path(spec)
    if spec_path is not None:
        files.append(spec_path)
        if os.path.isfile(spec_path):
            sidecar = _sidecar(spec)
            if sidecar is not None:
                files.append(sidecar)
    frozen = []
    for name in sorted(options):
        value = options[name]
        path = _existing_path(value)
        if path is not None:
            files.append(path)
            frozen.append((name, ("path", path)))
        else:
            frozen.append((name, _freeze(value)))
    keras_home = (os.environ.get("KERAS_HOME"), os.environ.get("HOME"))
    key = (str(spec), spec_path, tuple(frozen), None if spec_path else keras_home)
    return key, files


def _files_identity(files: list[str]) -> tuple:
    return tuple(stat_identity(path) for path in files)


def _weight_bytes(adapter: Any, files: list[str]) -> int:
    """Bytes of the model's weights (the files' size when the model exposes none)."""
    total = 0
    with contextlib.suppress(Exception):
        import numpy as np

        for weight in adapter.model.weights:
            total += math.prod(int(d) for d in weight.shape) * np.dtype(weight.dtype).itemsize
    if total:
        return total
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f))


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc), so evictions show in the RSS."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# -- the cache -------------------------------------------------------------------------------


@dataclass
class _Method:
    method: Any
    name: str
    options: dict[str, Any]
    uses: int = 0


@dataclass
class _Model:
    key: tuple
    files: list[str]
    digest: str
    adapter: Any
    nbytes: int
    loaded_at: float = field(default_factory=time.time)
    uses: int = 1
    methods: OrderedDict[tuple, _Method] = field(default_factory=OrderedDict)


class WarmCache:
    """Models (LRU, bounded by count and weight bytes) and the methods built on them."""

    def __init__(self, max_models: int = DEFAULT_MAX_MODELS, max_bytes: int | None = None):
        self.max_models = max(1, int(max_models))
        self.max_bytes = int(max_bytes) if max_bytes else None
        self._models: OrderedDict[tuple, _Model] = OrderedDict()
        self._owners: dict[int, _Model] = {}  # id(adapter) -> its entry (which keeps it alive)
        self._lock = threading.RLock()
        self._used: list[tuple[tuple, tuple]] = []
        self._freed = False
        self.stats = {"model_hits": 0, "model_loads": 0, "model_reloads": 0, "method_hits": 0}
        self._names_baseline = _keras_names()
        self._registry: tuple[dict, dict] | None = None

    # -- models --

    def model(self, loader: Callable[..., Any], spec: Any, options: dict[str, Any]) -> Any:
        key, files = model_key(spec, options)
        with self._lock:
            entry = self._models.get(key)
        if entry is not None:
            if content_digest(files) == entry.digest:
                with self._lock:
                    entry.uses += 1
                    self._models.move_to_end(key)
                    self.stats["model_hits"] += 1
                return entry.adapter
            with self._lock:
                self._evict(key)
                self.stats["model_reloads"] += 1
        before = _files_identity(files)
        digest = content_digest(files)
        adapter = loader(spec, **options)
        with self._lock:
            self.stats["model_loads"] += 1
        if _files_identity(files) != before:
            return adapter  # changed while loading: use it once, keep nothing
        nbytes = _weight_bytes(adapter, files)
        if self.max_bytes is not None and nbytes > self.max_bytes:
            return adapter
        with self._lock:
            entry = _Model(key, files, digest, adapter, nbytes)
            self._models[key] = entry
            self._owners[id(adapter)] = entry
            self._trim(keep=key)
        return adapter

    def _evict(self, key: tuple) -> None:
        entry = self._models.pop(key, None)
        if entry is not None:
            self._owners.pop(id(entry.adapter), None)
            entry.methods.clear()
            self._freed = True

    def _trim(self, keep: tuple) -> None:
        def over() -> bool:
            total = sum(e.nbytes for e in self._models.values())
            too_big = self.max_bytes is not None and total > self.max_bytes
            return len(self._models) > self.max_models or too_big

        while over():
            victim = next((k for k in self._models if k != keep), None)
            if victim is None:
                break
            self._evict(victim)

    # -- methods --

    def method(self, cls: Callable[..., Any], adapter: Any, options: dict[str, Any]) -> Any:
        with self._lock:
            entry = self._owners.get(id(adapter))
        reusable = entry is not None and entry.adapter is adapter
        if not reusable or getattr(adapter, "input_size", None) is None:
            return cls(adapter, **options)
        key = (getattr(cls, "__module__", ""), getattr(cls, "__qualname__", repr(cls)))
        key += (_freeze(options),)
        with self._lock:
            held = entry.methods.get(key)
        if held is None:
            method = cls(adapter, **options)
            held = _Method(
                method,
                name=str(getattr(cls, "name", getattr(cls, "__name__", "method"))),
                options=dict(options),
            )
            with self._lock:
                entry.methods[key] = held
                while len(entry.methods) > METHODS_PER_MODEL:
                    entry.methods.popitem(last=False)
        else:
            with self._lock:
                entry.methods.move_to_end(key)
                self.stats["method_hits"] += 1
        with self._lock:
            held.uses += 1
            self._used.append((entry.key, key))
        return held.method

    # -- per command --

    def begin_command(self) -> None:
        with self._lock:
            self._used.clear()
        _set_keras_names(self._names_baseline)
        self._registry = _keras_registry()

    def end_command(self, interrupted: bool = False) -> None:
        _restore_keras_registry(self._registry)
        with self._lock:
            if interrupted:
                for model_key_, method_key in self._used:
                    entry = self._models.get(model_key_)
                    if entry is not None:
                        entry.methods.pop(method_key, None)
            self._used.clear()
            freed, self._freed = self._freed, False
        if freed:
            gc.collect()
            _malloc_trim()

    # -- status --

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            models = [
                {
                    "source": getattr(e.adapter, "source", str(e.key[0])),
                    "path": e.files[0] if e.files else None,
                    "bytes": e.nbytes,
                    "uses": e.uses,
                    "loaded_at": e.loaded_at,
                    "methods": [
                        {
                            "name": m.name,
                            "batching": repr(m.options.get("batching")),
                            "uses": m.uses,
                        }
                        for m in e.methods.values()
                    ],
                }
                for e in reversed(self._models.values())  # most recently used first
            ]
            return {
                "max_models": self.max_models,
                "max_bytes": self.max_bytes,
                "held_bytes": sum(e.nbytes for e in self._models.values()),
                "models": models,
                **self.stats,
            }


# -- Keras global state ----------------------------------------------------------------------


def _keras_names() -> Any:
    with contextlib.suppress(Exception):
        from keras.src.backend.common import global_state

        return copy.deepcopy(global_state.get_global_attribute("object_name_uids"))
    return None


def _set_keras_names(baseline: Any) -> None:
    with contextlib.suppress(Exception):
        from keras.src.backend.common import global_state

        global_state.set_global_attribute("object_name_uids", copy.deepcopy(baseline))


def _keras_registry() -> tuple[dict, dict] | None:
    with contextlib.suppress(Exception):
        from keras.src.saving import object_registration as registration

        return dict(registration.GLOBAL_CUSTOM_OBJECTS), dict(registration.GLOBAL_CUSTOM_NAMES)
    return None


def _restore_keras_registry(saved: tuple[dict, dict] | None) -> None:
    if saved is None:
        return
    with contextlib.suppress(Exception):
        from keras.src.saving import object_registration as registration

        for live, kept in zip(
            (registration.GLOBAL_CUSTOM_OBJECTS, registration.GLOBAL_CUSTOM_NAMES),
            saved,
            strict=True,
        ):
            live.clear()
            live.update(kept)

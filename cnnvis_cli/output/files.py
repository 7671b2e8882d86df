"""Files the user owns: atomic writes, permissions, names that fit, and a lock per output folder.

- Every write goes to a temporary file in the target folder (``.cnnvis-<random>.tmp``: short, so
  a long output name never makes the *temporary* name overflow) and is renamed into place, so an
  interrupted run never leaves a half-written file. The file gets the permissions any other file
  would (``0666`` minus the umask), not ``mkstemp``'s ``0600``.
- A run holds an exclusive ``flock`` on ``OUT/.cnnvis.lock`` (released by the kernel even after
  ``kill -9``); a second run into the same folder fails fast. While it holds the lock it removes
  temporaries of its own naming left by a killed run. The lock file is removed when the run ends
  (a run that locked a file another run had just removed notices and locks the new one).
- An output name longer than the file system allows (255 bytes) is shortened, keeping a stable
  hash of the full name so distinct names stay distinct.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from cnnvis_cli.errors import CnnvisError

TEMP_PREFIX = ".cnnvis-"
TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".cnnvis.lock"
NAME_MAX = 255  # bytes in one path component on common file systems

_umask: int | None = None
_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask (read once; setting it back at once keeps the window tiny)."""
    global _umask
    with _umask_lock:
        if _umask is None:
            _umask = os.umask(0o022)
            os.umask(_umask)
        return _umask


def forget_umask() -> None:
    """Read the umask afresh next time (a long-lived process serving several users' shells)."""
    global _umask
    with _umask_lock:
        _umask = None


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename; mode 0666 & ~umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (characters UTF-8 cannot encode are backslash-escaped)."""
    atomic_write(path, text.encode("utf-8", "backslashreplace"))


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write a float32 array as .npy atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32))
    atomic_write(path, buffer.getvalue())


def fit_name(name: str, limit: int = NAME_MAX) -> str:
    """``name`` if it fits in ``limit`` bytes; else its stem cut short + ``~`` + 10 hex digits of
    its SHA-1 + its suffix (stable: the same long name always gives the same short one)."""
    encoded = os.fsencode(name)
    if len(encoded) <= limit:
        return name
    suffix = Path(name).suffix
    tag = "~" + hashlib.sha1(encoded).hexdigest()[:10]
    room = limit - len(os.fsencode(tag + suffix))
    stem = name[: len(name) - len(suffix)]
    while len(os.fsencode(stem)) > room:  # cut whole characters, never half a UTF-8 sequence
        stem = stem[:-1]
    return stem + tag + suffix


def remove_stale_temporaries(folder: Path) -> int:
    """Delete ``.cnnvis-*.tmp`` files under ``folder`` (only call while holding its lock)."""
    removed = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
    return removed


class OutputLock:
    """An exclusive lock on an output folder for the duration of a run."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise CnnvisError(
                        f"another cnnvis run is writing to {self.path.parent} (it holds "
                        f"{self.path}); wait for it to finish or choose another -o/--out"
                    ) from None
                raise
            if self._still_linked(fd):
                break
            os.close(fd)  # the previous holder removed it meanwhile: lock the new file
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _still_linked(self, fd: int) -> bool:
        try:
            here, there = os.fstat(fd), os.stat(self.path)
        except FileNotFoundError:
            return False
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # while still holding it: see acquire()
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

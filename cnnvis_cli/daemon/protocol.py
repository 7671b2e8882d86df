"""What the client and the daemon share: frames, paths, permissions, environment, fingerprint.

Standard library only, and only cheap modules: the client imports this on every command.

Wire format: a stream of frames over a Unix stream socket, each ``type (1 byte) | length
(4 bytes, big-endian) | payload``.

Client -> daemon:
  ``R`` request, JSON: ``{"op": "run" | "status" | "stop" | "ping", ...}``; a run request
        carries argv, prog name, cwd, umask, the forwarded environment, tty flags, terminal size
        and stream encodings (see ``client.run_request``).
  ``C`` cancel the running (or queued) command: the daemon raises KeyboardInterrupt in it.
Daemon -> client:
  ``S`` the command started (before it, a closed connection means "nothing ran").
  ``O`` / ``E`` bytes for the client's stdout / stderr.
  ``N`` a notice line (UTF-8) for the client's stderr, e.g. that it waits for another command.
  ``X`` the end, JSON: ``{"code": N}`` for a command; ``{"refused": reason}`` when the daemon
        will not run it (the client then runs it in-process); the answer to status/stop/ping.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import stat
import struct
import sys

PROTOCOL = 1

REQUEST = b"R"
CANCEL = b"C"
STARTED = b"S"
STDOUT = b"O"
STDERR = b"E"
NOTICE = b"N"
RESULT = b"X"

_HEADER = struct.Struct("!cI")
MAX_REQUEST = 16 * 1024 * 1024  # argv + environment; anything bigger is not a client of ours
MAX_FRAME = 1024 * 1024 * 1024
SOCKET_NAME = "daemon.sock"
# AF_UNIX paths are limited to 108 bytes including the terminating NUL on Linux
MAX_SOCKET_PATH = 107

_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


class DaemonError(Exception):
    """A daemon problem worth one line to the user (bad folder, daemon not answering...)."""


# -- frames ------------------------------------------------------------------------------------


def send_frame(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    sock.sendall(_HEADER.pack(kind, len(payload)) + payload)


def send_json(sock: socket.socket, kind: bytes, value: object) -> None:
    send_frame(sock, kind, json.dumps(value).encode())


def _read_exact(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, limit: int = MAX_FRAME) -> tuple[bytes, bytes]:
    """The next ``(type, payload)``; EOFError when the peer closed the connection."""
    kind, size = _HEADER.unpack(_read_exact(sock, _HEADER.size))
    if size > limit:
        raise DaemonError(f"frame of {size} bytes exceeds the limit of {limit}")
    return kind, _read_exact(sock, size) if size else b""


# -- where the socket lives ------------------------------------------------------------------


class Paths:
    """The daemon's private folder and the files in it."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.socket = os.path.join(folder, SOCKET_NAME)
        self.start_lock = os.path.join(folder, "start.lock")  # serialises `daemon start`
        self.pidfile = os.path.join(folder, "daemon.pid")  # flock-ed by the live daemon
        self.log = os.path.join(folder, "daemon.log")

    def __repr__(self) -> str:
        return f"Paths({self.folder!r})"


def runtime_paths(environ: dict[str, str] | None = None) -> Paths:
    """``$XDG_RUNTIME_DIR/cnnvis``, else ``${XDG_CACHE_HOME:-~/.cache}/cnnvis/daemon``."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and os.path.isdir(runtime):
        return Paths(os.path.join(runtime, "cnnvis"))
    cache = env.get("XDG_CACHE_HOME", "")
    if not (cache and os.path.isabs(cache)):
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    return Paths(os.path.join(cache, "cnnvis", "daemon"))


def ensure_private_dir(folder: str) -> None:
    """Create ``folder`` (mode 0700) or check that an existing one is ours and private."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError as exc:
        raise DaemonError(f"cannot create the daemon folder {folder} ({exc.strerror})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise DaemonError(f"{folder} is not a folder; refusing to put the daemon socket there")
    if info.st_uid != os.getuid():
        raise DaemonError(f"{folder} belongs to uid {info.st_uid}, not to you; refusing to use it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(folder, 0o700)


def check_socket_path(path: str) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise DaemonError(
            f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes; set XDG_RUNTIME_DIR "
            "to a shorter folder"
        )


# -- peers -----------------------------------------------------------------------------------


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
    pid, uid, gid = _CREDENTIALS.unpack(raw)
    return pid, uid, gid


def peer_allowed(peer_uid: int, own_uid: int | None = None) -> bool:
    """The daemon serves its own user only (root gets no exception)."""
    return peer_uid == (os.getuid() if own_uid is None else own_uid)


def connect(path: str, timeout: float = 5.0) -> socket.socket:
    """A connection to the daemon at ``path``, after checking it runs as our own user.

    Raises ``ConnectionError``/``FileNotFoundError`` (no daemon) or ``DaemonError``.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.settimeout(None)
        _, uid, _ = peer_credentials(sock)
        if not peer_allowed(uid):
            raise DaemonError(f"the socket {path} is served by uid {uid}, not by you")
    except BaseException:
        sock.close()
        raise
    return sock


def no_daemon_error(exc: BaseException) -> bool:
    """True when ``exc`` from ``connect`` means "no daemon listens there"."""
    if isinstance(exc, (FileNotFoundError, ConnectionRefusedError, socket.timeout)):
        return True
    return isinstance(exc, OSError) and exc.errno in (
        errno.ENOENT,
        errno.ECONNREFUSED,
        errno.ENOTSOCK,
        errno.ENOTDIR,
        errno.EACCES,
    )


# -- environment -----------------------------------------------------------------------------

# Variables read while the command runs: the daemon applies the client's values (or their
# absence) for the command and restores its own afterwards.
COMMAND_NAMES = frozenset(
    {
        "COLUMNS",
        "LINES",
        "TERM",
        "COLORTERM",
        "NO_COLOR",
        "FORCE_COLOR",
        "TTY_COMPATIBLE",
        "TTY_INTERACTIVE",
        "CLICOLOR",
        "CLICOLOR_FORCE",
        "PY_COLORS",
        "TERMINAL_WIDTH",
        "GITHUB_ACTIONS",
        "_TYPER_FORCE_DISABLE_TERMINAL",
        "JUPYTER_COLUMNS",
        "JUPYTER_LINES",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONIOENCODING",
        "HOME",
        "KERAS_HOME",
    }
)
COMMAND_PREFIXES = ("CNNVIS_", "LC_")
# Variables read when TensorFlow, Keras, OpenCV or Typer are imported: the daemon imported them
# at start, so a client whose values differ is refused and runs in-process.
IMPORT_NAMES = frozenset(
    {
        "HOME",
        "CUDA_VISIBLE_DEVICES",
        "PYTHONHASHSEED",
        "PYTHONPATH",
        "TYPER_USE_RICH",
        "TYPER_STANDARD_TRACEBACK",
        "_TYPER_STANDARD_TRACEBACK",
    }
)
IMPORT_PREFIXES = ("TF_", "KERAS_", "ABSL_", "OPENCV_", "OMP_", "MKL_", "OPENBLAS_")
# What ``cnnvis_cli.core.tf.tf_and_keras`` sets when absent: absent and default are the same run.
IMPORT_DEFAULTS = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "KERAS_BACKEND": "tensorflow",
    "ABSL_MIN_LOG_LEVEL": "3",
}


def _selected(name: str, names: frozenset[str], prefixes: tuple[str, ...]) -> bool:
    return name in names or name.startswith(prefixes)


def is_forwarded(name: str) -> bool:
    return _selected(name, COMMAND_NAMES, COMMAND_PREFIXES) or _selected(
        name, IMPORT_NAMES, IMPORT_PREFIXES
    )


def forwarded_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The part of the environment a command may depend on, which the client sends."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if is_forwarded(k)}


def import_env(environ: dict[str, str]) -> dict[str, str]:
    """The import-time variables, with cnnvis' own defaults filled in."""
    chosen = {k: v for k, v in environ.items() if _selected(k, IMPORT_NAMES, IMPORT_PREFIXES)}
    return {**IMPORT_DEFAULTS, **chosen}


def import_env_mismatch(daemon: dict[str, str], client: dict[str, str]) -> list[str]:
    """Names of import-time variables whose values differ (sorted)."""
    ours, theirs = import_env(daemon), import_env(client)
    return sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))


# -- code fingerprint ------------------------------------------------------------------------


def code_fingerprint() -> str:
    """Identifies this installation's code: Python version, package folder, every .py file.

    A daemon started before a source file changed (or from another installation) has a
    different fingerprint; the client then runs the command in-process instead.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha1(f"{PROTOCOL}|{sys.version}|{root}".encode())
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                digest.update(f"{path}|{info.st_size}|{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()

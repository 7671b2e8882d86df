"""What ``cnnvis daemon start | status | stop`` do (standard library only).

One daemon per user and folder: ``start`` holds ``start.lock`` (flock) while it checks for a live
daemon, removes a stale socket and launches a new one, so concurrent starts leave exactly one;
the daemon itself holds ``daemon.pid`` locked for its whole life, which is how a live daemon is
told from a stale socket file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from cnnvis_cli.daemon import client, protocol

START_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZES = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_OFF = {"0", "never", "none", "off", "no"}

Say = Callable[[str], None]


def _say(message: str) -> None:
    print(message, flush=True)


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- parsing and formatting ------------------------------------------------------------------


def parse_duration(text: str) -> float | None:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds; ``0``/``never``/``off`` -> None."""
    value = text.strip().lower()
    if value in _OFF:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?", value)
    if not match:
        raise ValueError(f"invalid duration {text!r}; use e.g. 90s, 15m, 2h or 0 for never")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or ""]
    return seconds or None


def parse_size(text: str) -> int | None:
    """``512M``, ``4G``, ``1.5GiB``, bytes -> bytes; ``0``/``none`` -> None."""
    value = text.strip().lower()
    if value in _OFF:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", value)
    if not match:
        raise ValueError(f"invalid size {text!r}; use e.g. 512M, 4G or 0 for no bound")
    size = int(float(match.group(1)) * _SIZES[match.group(2)])
    return size or None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = round(seconds)
    parts = []
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            parts.append(f"{seconds // length}{unit}")
            seconds %= length
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return " ".join(parts)


def format_bytes(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


# -- locks -------------------------------------------------------------------------------------


@contextlib.contextmanager
def start_lock(paths: protocol.Paths) -> Iterator[None]:
    fd = os.open(paths.start_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def daemon_pid(paths: protocol.Paths) -> int | None:
    """The pid of the live daemon (the holder of the ``daemon.pid`` lock), else None."""
    try:
        fd = os.open(paths.pidfile, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def remove_stale_socket(paths: protocol.Paths) -> bool:
    """Remove a socket file no live daemon serves (call with the start lock held)."""
    if os.path.lexists(paths.socket) and daemon_pid(paths) is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths.socket)
        return True
    return False


# -- start -------------------------------------------------------------------------------------


def _prepare(paths: protocol.Paths) -> None:
    protocol.ensure_private_dir(paths.folder)
    protocol.check_socket_path(paths.socket)


def _describe(idle_timeout: float | None, max_models: int, max_memory: int | None) -> str:
    memory = f", {format_bytes(max_memory)} of weights" if max_memory else ""
    return f"idle timeout {format_duration(idle_timeout)}, up to {max_models} model(s){memory}"


def wait_ready(paths: protocol.Paths, proc: subprocess.Popen | None, timeout: float) -> dict | None:
    """Ping until the daemon answers; None if ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return None
        info = client.call("ping", paths)
        if info is not None and "pid" in info:
            return info
        time.sleep(0.05)
    return None


def _log_tail(paths: protocol.Paths, lines: int = 8) -> str:
    try:
        with open(paths.log, errors="replace") as log:
            return "".join(log.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


def _server_command(idle_timeout: float | None, max_models: int, max_memory: int | None):
    command = [
        sys.executable,
        "-m",
        "cnnvis_cli.daemon.server",
        "--idle-timeout",
        str(idle_timeout or 0),
        "--max-models",
        str(max_models),
    ]
    if max_memory:
        command += ["--max-memory", str(max_memory)]
    return command


def start(
    idle_timeout: float | None = 900.0,
    max_models: int = 3,
    max_memory: int | None = None,
    *,
    foreground: bool = False,
    say: Say = _say,
    warn: Say = _warn,
) -> int:
    """Start the daemon unless one runs; wait until it answers; one line. Returns an exit code."""
    paths = protocol.runtime_paths()
    try:
        _prepare(paths)
    except protocol.DaemonError as exc:
        warn(f"error: {exc}")
        return 2
    with start_lock(paths):
        info = client.call("ping", paths)
        if info is None and daemon_pid(paths) is not None:  # starting up: wait for it
            info = wait_ready(paths, None, START_TIMEOUT)
            if info is None:
                warn(
                    f"error: a daemon (pid {daemon_pid(paths)}) holds {paths.pidfile} but does "
                    "not answer; stop it with `cnnvis daemon stop`"
                )
                return 2
        if info is not None:
            note = ""
            if info.get("fingerprint") != protocol.code_fingerprint():
                note = (
                    "; it runs other cnnvis code than this installation, restart it: "
                    "cnnvis daemon stop; cnnvis daemon start"
                )
            say(f"cnnvis daemon already running: pid {info['pid']}, socket {paths.socket}{note}")
            return 0
        stale = remove_stale_socket(paths)
        if not foreground:
            return _spawn(paths, idle_timeout, max_models, max_memory, stale, say, warn)
    from cnnvis_cli.daemon.server import Daemon

    say(f"cnnvis daemon in the foreground: socket {paths.socket} (Ctrl-C stops it)")
    daemon = Daemon(paths, idle_timeout=idle_timeout, max_models=max_models, max_memory=max_memory)
    return daemon.serve()


def _spawn(
    paths: protocol.Paths,
    idle_timeout: float | None,
    max_models: int,
    max_memory: int | None,
    stale: bool,
    say: Say,
    warn: Say,
) -> int:
    log = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        proc = subprocess.Popen(
            _server_command(idle_timeout, max_models, max_memory),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=package_parent,  # `-m` finds this very cnnvis_cli even from a source checkout
            start_new_session=True,  # detached: no controlling terminal, own process group
            close_fds=True,
        )
    finally:
        os.close(log)
    info = wait_ready(paths, proc, START_TIMEOUT)
    if info is None:
        if proc.poll() is None:
            proc.terminate()
        tail = _log_tail(paths)
        warn(
            f"error: the cnnvis daemon did not start (log: {paths.log})"
            + (f"\n{tail}" if tail else "")
        )
        return 2
    cleaned = "; removed a stale socket" if stale else ""
    say(
        f"cnnvis daemon started: pid {info['pid']}, socket {paths.socket} "
        f"({_describe(idle_timeout, max_models, max_memory)}){cleaned}"
    )
    return 0


# -- status and stop ---------------------------------------------------------------------------


def status(*, as_json: bool = False, say: Say = _say) -> int:
    """Print what the daemon holds; exit 1 when none runs."""
    paths = protocol.runtime_paths()
    info = client.call("status", paths)
    if info is None:
        stale = os.path.lexists(paths.socket) and daemon_pid(paths) is None
        what = "a stale socket is left at" if stale else "socket"
        if as_json:
            say(json.dumps({"running": False, "socket": paths.socket, "stale": stale}))
        else:
            say(f"no cnnvis daemon is running ({what} {paths.socket})")
        return 1
    if as_json:
        say(json.dumps({"running": True, **info}, indent=2))
        return 0
    for line in status_lines(info):
        say(line)
    return 0


def status_lines(info: dict) -> list[str]:
    warm = info.get("warm") or {}
    running = info.get("command")
    lines = [
        f"cnnvis daemon {info.get('version', '?')}: pid {info['pid']}, up "
        f"{format_duration(info.get('uptime'))}, socket {info.get('socket')}",
        f"commands served: {info.get('commands_served', 0)}; running: "
        + (" ".join(running) if running else "none")
        + f"; queued: {info.get('queued', 0)}",
        f"memory: RSS {format_bytes(info.get('rss_bytes'))} "
        f"(peak {format_bytes(info.get('peak_rss_bytes'))})",
    ]
    idle_timeout = info.get("idle_timeout")
    idle_for = info.get("idle_for") or 0.0
    if idle_timeout:
        left = max(0.0, idle_timeout - idle_for)
        lines.append(
            f"idle for {format_duration(idle_for)}; exits after {format_duration(left)} more "
            f"without a command (idle timeout {format_duration(idle_timeout)})"
        )
    else:
        lines.append(f"idle for {format_duration(idle_for)}; no idle timeout")
    models = warm.get("models") or []
    bound = warm.get("max_bytes")
    lines.append(
        f"models held: {len(models)} of {warm.get('max_models', '?')} "
        f"({format_bytes(warm.get('held_bytes', 0))} of weights"
        + (f", bound {format_bytes(bound)}" if bound else "")
        + f"); loads {warm.get('model_loads', 0)}, reuses {warm.get('model_hits', 0)}, "
        f"reloads of changed files {warm.get('model_reloads', 0)}, "
        f"method reuses {warm.get('method_hits', 0)}"
    )
    for model in models:
        methods = ", ".join(
            f"{m['name']} (batch {m.get('batch_size')}, {m.get('mode')}, used {m.get('uses')})"
            for m in model.get("methods", [])
        )
        path = model.get("path")
        where = f" ({path})" if path and path != model.get("source") else ""
        lines.append(
            f"  {model.get('source')}{where}: {format_bytes(model.get('bytes'))}, used "
            f"{model.get('uses')} time(s)" + (f"; methods: {methods}" if methods else "")
        )
    return lines


def stop(*, say: Say = _say, warn: Say = _warn) -> int:
    """Stop the daemon (a running command is interrupted) and wait until it has exited."""
    paths = protocol.runtime_paths()
    info = client.call("stop", paths)
    if info is not None and "stopping" in info:
        pid = int(info["stopping"])
    else:
        pid = daemon_pid(paths)
        if pid is None:
            say("no cnnvis daemon is running")
            return 0
        if pid > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # alive but not answering
    deadline = time.monotonic() + STOP_TIMEOUT
    while daemon_pid(paths) is not None:
        if time.monotonic() >= deadline:
            warn(f"error: the cnnvis daemon (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s")
            return 2
        time.sleep(0.05)
    say(f"cnnvis daemon stopped (pid {pid})")
    return 0

"""The daemon process: imports TensorFlow once, then runs ``cnnvis`` commands sent by clients.

Threads: the main thread runs the commands, one at a time, exactly as ``cnnvis`` would (the Typer
app with the client's argv, working directory, umask and environment, and stdout/stderr streamed
back); an acceptor thread takes connections and a thread per connection reads its request and
its cancel messages. Cancelling sends SIGINT to the main thread, whose handler raises
KeyboardInterrupt inside the command, so the command ends as an in-process Ctrl-C would (the
runner writes its summary; exit 130). Commands are serialised, so changing the process-wide
working directory, environment and ``sys.stdout``/``sys.stderr`` per command is safe.

Start it with ``cnnvis daemon start`` (which detaches it); ``python -m cnnvis_cli.daemon.server``
runs it in the foreground. SIGTERM (or SIGINT from outside, SIGHUP) stops it: a running command
is interrupted, queued ones are told to run in-process, and the socket is removed.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import fcntl
import importlib
import io
import json
import os
import queue
import selectors
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
from typing import Any

from cnnvis_cli import __version__
from cnnvis_cli.daemon import protocol

EXIT_INTERRUPTED = 130
WAIT_NOTICE_SECONDS = 1.0
POLL_SECONDS = 0.25
DEFAULT_IDLE_TIMEOUT = 15 * 60.0
TYPER_IMPORT_ENV = (
    "TERMINAL_WIDTH",
    "_TYPER_FORCE_DISABLE_TERMINAL",
    "GITHUB_ACTIONS",
    "FORCE_COLOR",
    "PY_COLORS",
)


def memory_bytes() -> tuple[int | None, int | None]:
    """This process' resident set size and its peak, from /proc (None elsewhere)."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024
    return values.get("VmRSS"), values.get("VmHWM")


class _Guard:
    """Interrupt bookkeeping for the main thread, touched by signal handlers (so: no locks)."""

    def __init__(self) -> None:
        self.interruptible = False  # a command is running and may be interrupted
        self.critical = 0  # the main thread is writing a frame: defer the interrupt
        self.deferred = False
        self.cancel_pending: Any = None  # the job a cancel (not an outside signal) is for
        self.hit = False  # the running command was interrupted

    def interrupt(self) -> None:
        """Raise KeyboardInterrupt in the running command (call from the main thread)."""
        if not self.interruptible:
            return
        if self.critical:
            self.deferred = True
            return
        self.hit = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def frame(self):
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            self.critical += 1
        try:
            yield
        finally:
            if on_main:
                self.critical -= 1
                if not self.critical and self.deferred:
                    self.deferred = False
                    self.interrupt()


class _Connection:
    """A client connection shared by its reader thread and the command's writers."""

    def __init__(self, sock: socket.socket, guard: _Guard) -> None:
        self.sock = sock
        self.alive = True
        self._lock = threading.Lock()
        self._guard = guard

    def send(self, kind: bytes, payload: bytes = b"") -> bool:
        if not self.alive:
            return False
        with self._lock, self._guard.frame():
            try:
                protocol.send_frame(self.sock, kind, payload)
            except OSError:
                self.alive = False  # the client went away: drop the rest
        return self.alive

    def send_json(self, kind: bytes, value: object) -> bool:
        return self.send(kind, json.dumps(value).encode())


class _BinaryStream(io.RawIOBase):
    """``sys.stdout.buffer`` of a command: each write is one frame."""

    def __init__(self, connection: _Connection, kind: bytes, tty: bool) -> None:
        super().__init__()
        self._connection = connection
        self._kind = kind
        self._tty = tty

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._tty

    def write(self, data: Any) -> int:
        size = len(data)
        if size:
            self._connection.send(self._kind, bytes(data))
        return size


class _TextStream(io.TextIOBase):
    """A command's ``sys.stdout``/``sys.stderr``: each write is one frame, unbuffered.

    Not a TextIOWrapper over a BufferedWriter: a KeyboardInterrupt raised once a write has been
    sent would make the buffered layer keep, and later send again, data already sent. Here a
    write is sent whole and then the interrupt, if one came meanwhile, is raised.
    """

    def __init__(
        self, connection: _Connection, kind: bytes, tty: bool, encoding: str, errors: str
    ) -> None:
        super().__init__()
        self._connection = connection
        self._kind = kind
        self._tty = tty
        self._encoding = encoding
        self._errors = errors
        self.buffer = _BinaryStream(connection, kind, tty)

    @property
    def encoding(self) -> str:
        return self._encoding

    @property
    def errors(self) -> str:
        return self._errors

    @property
    def line_buffering(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._tty

    def fileno(self) -> int:
        raise io.UnsupportedOperation("the command's output goes to a daemon client")

    def write(self, text: Any) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        data = text.encode(self._encoding, self._errors)
        if data:
            self._connection.send(self._kind, data)
        return len(text)


def _text_stream(connection: _Connection, kind: bytes, tty: bool, encoding: Any) -> _TextStream:
    name, errors = "utf-8", "strict"
    if isinstance(encoding, list) and len(encoding) == 2:
        name, errors = str(encoding[0]), str(encoding[1])
    try:
        codecs.lookup(name)
        codecs.lookup_error(errors)
    except LookupError:
        name, errors = "utf-8", "backslashreplace"
    return _TextStream(connection, kind, tty, name, errors)


class _Job:
    """One run request, from queued to done."""

    def __init__(self, connection: _Connection, request: dict[str, Any]) -> None:
        self.connection = connection
        self.request = request
        self.lock = threading.Lock()
        self.state = "queued"  # -> running -> done, or -> cancelled
        self.cancel_requested = False
        self.started = threading.Event()
        self.done = threading.Event()

    def finish(self, result: dict[str, Any]) -> None:
        self.connection.send_json(protocol.RESULT, result)
        self.done.set()


def _exit_status(code: Any) -> int:
    """The process exit status ``sys.exit(code)`` would give."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else code % 256
    print(code, file=sys.stderr)
    return 1


class Daemon:
    """Serves run, status, stop and ping requests on the Unix socket in ``paths``."""

    def __init__(
        self,
        paths: protocol.Paths,
        *,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_models: int = 3,
        max_memory: int | None = None,
        log: Any = None,
    ) -> None:
        self.paths = paths
        self.idle_timeout = idle_timeout or None
        self.max_models = max_models
        self.max_memory = max_memory
        self._log_stream = log if log is not None else sys.stderr
        self._guard = _Guard()
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._state_lock = threading.Lock()
        self._stopping = False
        self._stop_reason = ""
        self._closing = False
        self._current: _Job | None = None
        self._served = 0
        self._started_at = time.time()
        self._t0 = time.monotonic()
        self._last_activity = self._t0
        self._listener: socket.socket | None = None
        self._socket_inode: int | None = None
        self._pid_fd: int | None = None
        self._command: Any = None
        self._warning_filters: list = []
        self._fingerprint = ""
        self._import_env: dict[str, str] = {}
        self._typer_env: tuple | None = None
        self._main_ident = threading.main_thread().ident

    # -- logging --

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with contextlib.suppress(Exception):
            self._log_stream.write(f"[{stamp}] {message}\n")
            self._log_stream.flush()

    # -- life cycle --

    def serve(self) -> int:
        """Run until stopped or idle; returns the process exit code."""
        try:
            protocol.ensure_private_dir(self.paths.folder)
            protocol.check_socket_path(self.paths.socket)
        except protocol.DaemonError as exc:
            self.log(f"error: {exc}")
            return 2
        if not self._lock_pidfile():
            self.log("another cnnvis daemon holds the lock; exiting")
            return 1
        self._own_log_stream()
        try:
            self._import_env = dict(os.environ)  # before TensorFlow's import adds defaults
            self._fingerprint = protocol.code_fingerprint()
            started = time.perf_counter()
            self._warm_up()
            self.log(f"imported TensorFlow and cnnvis in {time.perf_counter() - started:.1f} s")
            self._install_signal_handlers()
            self._listen()
            self._last_activity = time.monotonic()
            threading.Thread(target=self._accept_loop, name="accept", daemon=True).start()
            idle = f"{self.idle_timeout:.0f} s" if self.idle_timeout else "none"
            self.log(
                f"ready: pid {os.getpid()}, socket {self.paths.socket}, idle timeout {idle}, "
                f"up to {self.max_models} model(s)"
            )
            self._loop()
            return 0
        finally:
            self._shutdown()

    def _own_log_stream(self) -> None:
        """Log through a descriptor of our own: a command may point fd 2 elsewhere for a while
        (``quiet_native_stderr`` around a model load), and connection threads log meanwhile."""
        with contextlib.suppress(AttributeError, OSError, ValueError):
            fd = os.dup(self._log_stream.fileno())
            self._log_stream = open(fd, "w", buffering=1, errors="backslashreplace")  # noqa: SIM115

    def _lock_pidfile(self) -> bool:
        """Hold ``daemon.pid`` locked for life: one daemon per folder; readers trust its pid."""
        fd = os.open(self.paths.pidfile, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + 2.0  # `status`/`stop` probe it with brief shared locks
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._pid_fd = fd
        return True

    def _warm_up(self) -> None:
        from cnnvis_cli.core.tf import tf_and_keras

        tf_and_keras()
        import typer.main
        import typer.rich_utils  # reads the environment at import: see _sync_typer

        import cnnvis_cli.cli.layers
        import cnnvis_cli.core.loading
        import cnnvis_cli.core.runner
        import cnnvis_cli.evaluation.check
        import cnnvis_cli.evaluation.deletion_insertion
        import cnnvis_cli.output.progress
        import cnnvis_cli.output.report  # noqa: F401
        from cnnvis_cli import warm
        from cnnvis_cli.cli import app
        from cnnvis_cli.methods import get_method, method_names

        for name in method_names():
            get_method(name)
        # Typer builds the Click command tree on every call (~40 ms for cnnvis): once is enough,
        # the app is not changed after import and Click keeps per-call state in its Context
        self._command = typer.main.get_command(app)
        self._warning_filters = list(warnings.filters)
        self._typer_env = tuple(os.environ.get(k) for k in TYPER_IMPORT_ENV)
        warm.enable(max_models=self.max_models, max_bytes=self.max_memory)

    def _listen(self) -> None:
        path = self.paths.socket
        if os.path.lexists(path):  # we hold the pid lock, so no live daemon owns it: stale
            os.unlink(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        listener.listen(64)
        self._socket_inode = os.stat(path).st_ino
        self._listener = listener

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_stop_signal)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        target, self._guard.cancel_pending = self._guard.cancel_pending, None
        if target is None:  # from outside (Ctrl-C on a foreground daemon, kill -INT): stop
            self._begin_stop("SIGINT")
        elif target is not self._current:
            return  # a late cancel for a command that has ended: not for the next one
        self._guard.interrupt()

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._begin_stop(signal.Signals(signum).name)
        self._guard.interrupt()

    def _begin_stop(self, reason: str) -> None:
        if not self._stopping:
            self._stop_reason = reason
            self._stopping = True

    def request_stop(self, reason: str) -> None:
        """Stop from another thread: interrupt the running command, then exit."""
        self._begin_stop(reason)
        current = self._current
        if current is not None:
            self._guard.cancel_pending = current
            signal.pthread_kill(self._main_ident, signal.SIGINT)

    def _loop(self) -> None:
        while not self._stopping:
            try:
                job = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self._idle_expired():
                    self._begin_stop(f"idle for {self.idle_timeout:.0f} s")
                continue
            if self._stopping:  # stopped while it waited: it runs in-process instead
                self._refuse(job, "the daemon is shutting down")
                break
            self._run(job)

    def _idle_expired(self) -> bool:
        if not self.idle_timeout or self._current is not None or not self._queue.empty():
            return False
        return time.monotonic() - self._last_activity >= self.idle_timeout

    def _shutdown(self) -> None:
        with self._state_lock:
            self._closing = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            with contextlib.suppress(OSError):
                if os.stat(self.paths.socket).st_ino == self._socket_inode:
                    os.unlink(self.paths.socket)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            self._refuse(job, "the daemon is shutting down")
        if self._listener is not None:
            self.log(f"stopped ({self._stop_reason or 'exit'}); served {self._served} command(s)")
        if self._pid_fd is not None:
            os.close(self._pid_fd)
            self._pid_fd = None

    def _refuse(self, job: _Job, reason: str) -> None:
        with job.lock:
            queued = job.state == "queued"
            job.state = "cancelled"
        if queued:
            job.finish({"refused": reason})

    # -- connections --

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not self._closing:
                try:
                    if not selector.select(POLL_SECONDS):
                        continue
                    conn, _ = listener.accept()
                except (OSError, ValueError):
                    if self._closing:
                        break
                    time.sleep(0.05)
                    continue
                threading.Thread(
                    target=self.handle, args=(conn,), name="connection", daemon=True
                ).start()

    def peer_ok(self, conn: Any) -> bool:
        """SO_PEERCRED: only processes of the daemon's own user are served."""
        try:
            _, uid, _ = protocol.peer_credentials(conn)
        except OSError:
            return False
        if protocol.peer_allowed(uid):
            return True
        self.log(f"refused a connection from uid {uid}")
        return False

    def handle(self, conn: Any) -> None:
        """Serve one connection (in its own thread)."""
        try:
            if not self.peer_ok(conn):
                return
            connection = _Connection(conn, self._guard)
            conn.settimeout(10.0)
            kind, payload = protocol.read_frame(conn, protocol.MAX_REQUEST)
            conn.settimeout(None)
            request = json.loads(payload) if kind == protocol.REQUEST else None
            if not isinstance(request, dict):
                return
            op = request.get("op")
            if op == "run":
                self._serve_run(connection, request)
            elif op == "ping":
                connection.send_json(protocol.RESULT, self.ping())
            elif op == "status":
                connection.send_json(protocol.RESULT, self.status())
            elif op == "stop":
                connection.send_json(protocol.RESULT, {"stopping": os.getpid()})
                self.log("stop requested")
                self.request_stop("stop requested")
            else:
                connection.send_json(
                    protocol.RESULT, {"refused": f"the daemon does not know {op!r}"}
                )
        except (OSError, EOFError, ValueError, protocol.DaemonError) as exc:
            self.log(f"connection error: {exc}")
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def refusal(self, request: dict[str, Any]) -> str | None:
        """Why this daemon must not run the request (the client then runs it in-process)."""
        if request.get("protocol") != protocol.PROTOCOL:
            return (
                f"the daemon speaks protocol {protocol.PROTOCOL}, this client "
                f"{request.get('protocol')}"
            )
        if request.get("fingerprint") != self._fingerprint:
            return (
                "the daemon runs other cnnvis code (it started before the code changed, or "
                "belongs to another installation); restart it with `cnnvis daemon stop` and "
                "`cnnvis daemon start`"
            )
        argv = request.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            return "the daemon got a malformed request"
        env = request.get("env")
        if not isinstance(env, dict):
            return "the daemon got a malformed request"
        differing = protocol.import_env_mismatch(self._import_env, env)
        if differing:
            return (
                f"the daemon was started with other values of {', '.join(differing)}, which "
                "take effect at import (TensorFlow, Keras...); restart it from this environment"
            )
        cwd = request.get("cwd")
        if not isinstance(cwd, str) or not os.path.isdir(cwd):
            return f"the daemon cannot enter the working directory {cwd}"
        if self._stopping:
            return "the daemon is shutting down"
        return None

    def _serve_run(self, connection: _Connection, request: dict[str, Any]) -> None:
        reason = self.refusal(request)
        if reason is not None:
            connection.send_json(protocol.RESULT, {"refused": reason})
            return
        job = _Job(connection, request)
        with self._state_lock:
            if self._closing:
                refusal = {"refused": "the daemon is shutting down"}
                connection.send_json(protocol.RESULT, refusal)
                return
            self._queue.put(job)
        waited_from = time.monotonic()
        told = False
        conn = connection.sock
        with selectors.DefaultSelector() as selector:
            selector.register(conn, selectors.EVENT_READ)
            while not job.done.is_set():
                ready = selector.select(POLL_SECONDS)
                if (
                    not told
                    and not job.started.is_set()
                    and time.monotonic() - waited_from >= WAIT_NOTICE_SECONDS
                ):
                    told = True
                    connection.send(
                        protocol.NOTICE,
                        b"another command is running in the daemon; waiting for it to finish",
                    )
                if not ready:
                    continue
                try:
                    kind, _ = protocol.read_frame(conn, 1 << 16)
                except (EOFError, OSError, protocol.DaemonError):
                    self.cancel(job)  # the client went away: stop working for it
                    break
                if kind == protocol.CANCEL:
                    self.cancel(job)
        job.done.wait()

    def cancel(self, job: _Job) -> None:
        with job.lock:
            state = job.state
            if state == "queued":
                job.state = "cancelled"
            job.cancel_requested = True
        if state == "queued":
            job.finish({"code": EXIT_INTERRUPTED})
        elif state == "running" and self._current is job:
            self._guard.cancel_pending = job
            signal.pthread_kill(self._main_ident, signal.SIGINT)

    # -- answers --

    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "version": __version__, "fingerprint": self._fingerprint}

    def status(self) -> dict[str, Any]:
        from cnnvis_cli import warm

        rss, peak = memory_bytes()
        current = self._current
        now = time.monotonic()
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self._started_at,
            "uptime": now - self._t0,
            "socket": self.paths.socket,
            "log": self.paths.log,
            "commands_served": self._served,
            "command": current.request["argv"][1:] if current is not None else None,
            "queued": self._queue.qsize(),
            "idle_timeout": self.idle_timeout,
            "idle_for": 0.0 if current is not None else now - self._last_activity,
            "rss_bytes": rss,
            "peak_rss_bytes": peak,
            "warm": warm.snapshot(),
        }

    # -- running commands (main thread) --

    def _run(self, job: _Job) -> None:
        with job.lock:
            if job.state != "queued":
                return
            job.state = "running"
        self._current = job
        job.started.set()
        job.connection.send(protocol.STARTED)
        started = time.perf_counter()
        try:
            code = self._execute(job)
        except Exception:  # a daemon bug, not the command's: report it, keep serving
            self.log(f"internal error running {job.request['argv'][1:]}:\n{traceback.format_exc()}")
            job.connection.send(
                protocol.STDERR, b"cnnvis: internal error in the daemon (see its log)\n"
            )
            code = 2
        finally:
            self._current = None
            self._served += 1
            self._last_activity = time.monotonic()
        with job.lock:
            job.state = "done"
        job.finish({"code": code})
        argv = " ".join(job.request["argv"][1:])
        self.log(f"ran `{argv}` in {time.perf_counter() - started:.2f} s: exit {code}")

    def _execute(self, job: _Job) -> int:
        """Run the command with the client's cwd, umask, environment and streams; restore after."""
        from cnnvis_cli import warm
        from cnnvis_cli.output import files

        request = job.request
        saved_env = dict(os.environ)
        saved_cwd = os.getcwd()
        saved_umask = os.umask(0o022)
        os.umask(saved_umask)
        saved_streams = (sys.stdin, sys.stdout, sys.stderr)
        saved_argv = sys.argv
        saved_tempdir = tempfile.tempdir
        tty = request.get("tty") or {}
        encodings = request.get("encoding") or {}
        out = _text_stream(
            job.connection, protocol.STDOUT, bool(tty.get("stdout")), encodings.get("stdout")
        )
        err = _text_stream(
            job.connection, protocol.STDERR, bool(tty.get("stderr")), encodings.get("stderr")
        )
        stdin = open(os.devnull)  # noqa: SIM115  (closed below)
        self._guard.hit = False
        try:
            sys.stdin, sys.stdout, sys.stderr = stdin, out, err
            try:
                os.chdir(request["cwd"])
            except OSError as exc:
                err.write(f"cnnvis: the daemon cannot enter {request['cwd']} ({exc.strerror})\n")
                return 2
            self._apply_env(request)
            with contextlib.suppress(TypeError, ValueError):
                os.umask(int(request.get("umask", saved_umask)))
                files.forget_umask()  # outputs take this client's umask
            tempfile.tempdir = None
            sys.argv = list(request["argv"])
            self._reset_warnings()
            self._sync_typer()
            warm.begin_command()
            return self._invoke(job)
        finally:
            for stream in (out, err):
                with contextlib.suppress(Exception):
                    stream.flush()
            warm.end_command(interrupted=self._guard.hit or job.cancel_requested)
            sys.stdin, sys.stdout, sys.stderr = saved_streams
            sys.argv = saved_argv
            tempfile.tempdir = saved_tempdir
            os.environ.clear()
            os.environ.update(saved_env)
            os.umask(saved_umask)
            os.chdir(saved_cwd)
            stdin.close()

    def _invoke(self, job: _Job) -> int:
        argv = job.request["argv"]
        prog = str(job.request.get("prog") or "cnnvis")
        guard = self._guard
        try:
            guard.interruptible = True
            if job.cancel_requested or self._stopping:
                guard.hit = True
                raise KeyboardInterrupt
            try:
                self._command.main(args=argv[1:], prog_name=prog, standalone_mode=True)
                return 0
            finally:
                guard.interruptible = False
        except SystemExit as exc:
            return _exit_status(exc.code)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        except BaseException:
            traceback.print_exc()
            return 1

    def _apply_env(self, request: dict[str, Any]) -> None:
        client = {
            str(k): str(v)
            for k, v in (request.get("env") or {}).items()
            if protocol.is_forwarded(str(k))
        }
        for name in [n for n in os.environ if protocol.is_forwarded(n) and n not in client]:
            del os.environ[name]
        os.environ.update(client)
        for name, value in protocol.IMPORT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        size = request.get("size")
        if (
            isinstance(size, list)
            and len(size) == 2
            and all(isinstance(n, int) and n > 0 for n in size)
        ):  # what Rich would ask the terminal
            os.environ.setdefault("COLUMNS", str(size[0]))
            os.environ.setdefault("LINES", str(size[1]))

    def _reset_warnings(self) -> None:
        """The warning filters as after start-up, and "once" warnings shown again, as in a
        fresh process (a command's filters would otherwise stay for the next ones)."""
        warnings.filters[:] = self._warning_filters
        warnings.onceregistry.clear()
        mutated = getattr(warnings, "_filters_mutated", None)  # clears the "already shown" marks
        if mutated is not None:
            mutated()

    def _sync_typer(self) -> None:
        """Typer reads a few variables when ``typer.rich_utils`` is imported: follow the command."""
        now = tuple(os.environ.get(k) for k in TYPER_IMPORT_ENV)
        module = sys.modules.get("typer.rich_utils")
        if module is not None and now != self._typer_env:
            importlib.reload(module)
            self._typer_env = now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cnnvis_cli.daemon.server",
        description="The cnnvis daemon in the foreground (`cnnvis daemon start` detaches it).",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        help="seconds without a command before exiting (0: never)",
    )
    parser.add_argument("--max-models", type=int, default=3, help="models kept loaded")
    parser.add_argument(
        "--max-memory",
        type=int,
        default=None,
        help="bytes of model weights kept loaded (default: no bound)",
    )
    args = parser.parse_args(argv)
    daemon = Daemon(
        protocol.runtime_paths(),
        idle_timeout=args.idle_timeout,
        max_models=args.max_models,
        max_memory=args.max_memory,
    )
    return daemon.serve()


if __name__ == "__main__":
    sys.exit(main())

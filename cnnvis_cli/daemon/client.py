"""The thin client: send a ``cnnvis`` command to the daemon and relay what it writes.

Runs at the start of ``cnnvis_cli.cli.main`` (see ``delegate``), before TensorFlow, NumPy, OpenCV
or Rich could be imported, and imports none of them: only small standard-library modules.

``--daemon`` / ``--no-daemon`` anywhere before ``--`` are removed from ``sys.argv`` here, so
Typer never sees them. With ``--daemon`` or ``CNNVIS_DAEMON=1`` (and not ``--no-daemon``) the
command runs in the daemon when one answers; otherwise it runs in-process after one notice line
on stderr. ``cnnvis daemon ...`` itself always runs in-process.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from cnnvis_cli.daemon import protocol

TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
EXIT_INTERRUPTED = 130
EXIT_DAEMON_DIED = 2
_handled: tuple[int, tuple[str, ...]] | None = None  # the argv delegate() already decided on


def main() -> None:
    """The ``cnnvis`` console script: the daemon check runs before Typer is even imported.

    Importing ``cnnvis_cli.cli`` (Typer) costs ~40 ms more than this module; for a command the
    daemon runs, that is a sixth of the whole call.
    """
    delegate(sys.argv)
    from cnnvis_cli.cli import main as cli_main

    cli_main()


def split_flags(args: list[str]) -> tuple[bool | None, list[str]]:
    """``(choice, args without --daemon/--no-daemon)``; the last flag wins; ``--`` ends options."""
    choice: bool | None = None
    kept: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            kept.extend(args[i:])
            break
        if arg == "--daemon":
            choice = True
        elif arg == "--no-daemon":
            choice = False
        else:
            kept.append(arg)
    return choice, kept


def env_wants_daemon(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("CNNVIS_DAEMON", "").strip().lower() in TRUE_VALUES


def is_daemon_command(args: list[str]) -> bool:
    """``cnnvis daemon ...``: managed in-process, never sent to the daemon."""
    first = next((a for a in args if not a.startswith("-")), None)
    return first == "daemon"


def notice(message: str) -> None:
    sys.stderr.write(f"cnnvis: {message}\n")
    sys.stderr.flush()


def delegate(argv: list[str] | None = None) -> None:
    """Strip the daemon flags from ``argv`` (``sys.argv``) and, if asked, run the command remotely.

    Never returns when the daemon ran the command (raises SystemExit with its exit code);
    returns when the command should run in-process. Calling it again on the same argv (the
    console script's entry, then ``cnnvis_cli.cli.main``) is a no-op.
    """
    global _handled
    argv = sys.argv if argv is None else argv
    if _handled == (id(argv), tuple(argv)):
        return
    choice, rest = split_flags(argv[1:])
    argv[1:] = rest
    _handled = (id(argv), tuple(argv))
    wanted = choice if choice is not None else env_wants_daemon()
    if not wanted or is_daemon_command(rest):
        return
    code = run_remote(argv)
    if code is not None:
        raise SystemExit(code)


# -- the request -------------------------------------------------------------------------------


def prog_name(argv0: str) -> str:
    """The program name Click would show in usage lines (``cnnvis`` or ``python -m ...``)."""
    main = sys.modules.get("__main__")
    package = getattr(main, "__package__", None)
    if not package:
        return os.path.basename(argv0)
    name = os.path.splitext(os.path.basename(argv0))[0]
    module = package if name == "__main__" else f"{package}.{name}"
    return f"python -m {module.lstrip('.')}"


def terminal_size() -> list[int] | None:
    """The terminal's ``[columns, lines]``, from stdin, stdout, stderr in turn (as Rich asks)."""
    for fd in (0, 1, 2):
        try:
            size = os.get_terminal_size(fd)
        except (OSError, ValueError):
            continue
        return [size.columns, size.lines]
    return None


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


def _encoding(stream: object, default_errors: str) -> list[str]:
    return [
        getattr(stream, "encoding", None) or "utf-8",
        getattr(stream, "errors", None) or default_errors,
    ]


def current_umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def run_request(argv: list[str]) -> dict:
    return {
        "op": "run",
        "protocol": protocol.PROTOCOL,
        "fingerprint": protocol.code_fingerprint(),
        "argv": list(argv),
        "prog": prog_name(argv[0] if argv else "cnnvis"),
        "cwd": os.getcwd(),
        "umask": current_umask(),
        "env": protocol.forwarded_env(),
        "tty": {
            "stdin": _isatty(sys.stdin),
            "stdout": _isatty(sys.stdout),
            "stderr": _isatty(sys.stderr),
        },
        "size": terminal_size(),
        "encoding": {
            "stdout": _encoding(sys.stdout, "strict"),
            "stderr": _encoding(sys.stderr, "backslashreplace"),
        },
    }


# -- talking to the daemon -------------------------------------------------------------------


def open_connection(paths: protocol.Paths | None = None):
    """A connection to the daemon, or ``(None, reason)`` when none can be had."""
    paths = paths or protocol.runtime_paths()
    try:
        return protocol.connect(paths.socket), None
    except protocol.DaemonError as exc:
        return None, str(exc)
    except OSError as exc:
        if protocol.no_daemon_error(exc):
            return None, "no daemon is running"
        return None, f"cannot reach the daemon ({exc})"


def call(op: str, paths: protocol.Paths | None = None, **fields: object) -> dict | None:
    """One request/answer exchange (ping, status, stop); None when no daemon answers."""
    sock, _ = open_connection(paths)
    if sock is None:
        return None
    try:
        with sock:
            sock.settimeout(30.0)
            protocol.send_json(sock, protocol.REQUEST, {"op": op, **fields})
            while True:
                kind, payload = protocol.read_frame(sock)
                if kind == protocol.RESULT:
                    return json.loads(payload)
    except (OSError, EOFError, ValueError, protocol.DaemonError):
        return None


def _write(stream: object, data: bytes) -> None:
    try:
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            buffer.write(data)
        else:
            stream.write(data.decode(errors="replace"))  # type: ignore[attr-defined]
        stream.flush()  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        pass  # a closed pipe (e.g. `| head`): drop the rest, as a write-failed command would


def run_remote(argv: list[str]) -> int | None:
    """Run ``argv`` in the daemon and return its exit code; None to run in-process instead."""
    paths = protocol.runtime_paths()
    try:
        sock, reason = open_connection(paths)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if sock is None:
        notice(f"{reason}; running in-process (start one with `cnnvis daemon start`)")
        return None
    with sock:
        try:
            protocol.send_json(sock, protocol.REQUEST, run_request(argv))
        except OSError as exc:
            notice(f"cannot reach the daemon ({exc}); running in-process")
            return None
        except KeyboardInterrupt:  # closing the connection cancels the command, if it came
            return EXIT_INTERRUPTED
        return _relay(sock, paths)


def _relay(sock, paths: protocol.Paths) -> int | None:
    """Copy frames to stdout/stderr until the result; Ctrl-C sends a cancel and keeps reading."""
    started = False
    interrupts = 0
    while True:
        try:
            try:
                kind, payload = protocol.read_frame(sock)
            except (EOFError, OSError, protocol.DaemonError):
                if not started:
                    notice(
                        "the daemon closed the connection before running the command; "
                        "running in-process"
                    )
                    return None
                notice(f"the daemon died while running the command (its log: {paths.log})")
                return EXIT_DAEMON_DIED
            if kind == protocol.STDOUT:
                _write(sys.stdout, payload)
            elif kind == protocol.STDERR:
                _write(sys.stderr, payload)
            elif kind == protocol.NOTICE:
                notice(payload.decode(errors="replace"))
            elif kind == protocol.STARTED:
                started = True
            elif kind == protocol.RESULT:
                result = json.loads(payload)
                if "refused" in result:
                    notice(f"{result['refused']}; running in-process")
                    return None
                return int(result.get("code", 1))
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts >= 3:
                notice("interrupted three times; leaving the daemon to finish the command")
                return EXIT_INTERRUPTED
            with contextlib.suppress(OSError):
                protocol.send_frame(sock, protocol.CANCEL)

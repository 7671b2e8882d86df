"""Error types and the exit codes they map to.

Exit codes (see README): 0 every input processed, 1 some inputs failed, 2 usage or setup error
(nothing processed; also a summary, report or JUnit file that cannot be written), 3 a gate failed
(``check``, ``sanity``), 130 interrupted by Ctrl-C, 143 terminated by SIGTERM.
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_CHECK_FAILED = 3
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class CnnvisError(Exception):
    """A setup error that stops the run before any input is processed (exit 2)."""

    exit_code = EXIT_USAGE


class ModelError(CnnvisError):
    """The model cannot be loaded or cannot be used by the chosen method."""


class InputError(Exception):
    """One input cannot be used; the batch goes on without it (counts towards exit 1)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so a run stops the way Ctrl-C stops it (exit 143)."""

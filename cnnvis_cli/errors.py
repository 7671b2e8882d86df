"""Error types and the exit codes they map to.

Exit codes (see README): 0 every input processed, 1 some inputs failed, 2 usage or setup
error (nothing processed), 3 a ``check`` failed, 130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_CHECK_FAILED = 3
EXIT_INTERRUPTED = 130


class CnnvisError(Exception):
    """A setup error that stops the run before any input is processed (exit 2)."""

    exit_code = EXIT_USAGE


class ModelError(CnnvisError):
    """The model cannot be loaded or cannot be used by the chosen method."""


class InputError(Exception):
    """One input cannot be used; the batch goes on without it (counts towards exit 1)."""

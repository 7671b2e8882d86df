"""Errors to exit codes, in one place (hatch's ``Application.abort`` is the precedent).

Anything a user can cause ends as one ``error:`` line on stderr and an exit code; never a
traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from cnnvis_cli.errors import EXIT_USAGE, CnnvisError


def abort(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one ``error:`` line and return the ``typer.Exit`` to raise."""
    from cnnvis_cli.output.text import printable

    typer.echo(f"error: {printable(message)}", err=True)
    return typer.Exit(code)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn setup errors (``CnnvisError``) and invalid option values (``ValueError`` raised by
    an options dataclass) into one line and exit code 2."""
    try:
        yield
    except CnnvisError as exc:
        raise abort(str(exc), exc.exit_code) from None
    except ValueError as exc:
        raise abort(str(exc)) from None

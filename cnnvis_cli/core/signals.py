"""SIGTERM stops a run the way Ctrl-C does.

CI runners and ``timeout`` send SIGTERM. Within :func:`terminate_as_interrupt`, SIGTERM raises
:class:`~cnnvis_cli.errors.Terminated` (a ``KeyboardInterrupt``) in the main thread, so the
pipeline finishes or drops in-flight work, writes the summary with ``"interrupted": true`` and
exits 143.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from cnnvis_cli.errors import Terminated


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

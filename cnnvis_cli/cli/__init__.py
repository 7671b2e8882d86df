"""The ``cnnvis`` command line (see ``app.py``)."""

from cnnvis_cli.cli.app import app, main

__all__ = ["app", "main"]

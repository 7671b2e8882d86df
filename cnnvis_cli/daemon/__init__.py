"""The warm-start daemon: run ``cnnvis`` commands in a long-lived process.

A daemon (``cnnvis daemon start``) imports TensorFlow once and keeps loaded models and traced
functions (see ``cnnvis_cli.warm``); with ``CNNVIS_DAEMON=1`` or ``--daemon`` a ``cnnvis``
command is sent to it over a Unix socket by a thin client that imports neither TensorFlow nor
NumPy nor Rich. Modules:

- ``protocol``: frames, socket location and permissions, peer credentials, the environment the
  client forwards, and the code fingerprint both sides compare (standard library only).
- ``client``: the thin client (``delegate`` runs at the start of ``cnnvis_cli.cli.main``).
- ``server``: the daemon process (``python -m cnnvis_cli.daemon.server``).
- ``control``: start (detached, one daemon per user), status and stop.
- ``commands``: the ``cnnvis daemon`` Typer sub-app.

This package's ``__init__`` imports nothing, so the client stays cheap.
"""

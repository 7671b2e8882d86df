"""cnnvis: see where a convolutional network looks.

Importing this package is cheap: TensorFlow is only imported when a model is loaded. The Python
API (``cnnvis_cli.explain``, ``cnnvis_cli.overlay``) lives in ``api.py``.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "explain", "overlay"]


def __getattr__(name: str):
    """``cnnvis_cli.explain`` / ``cnnvis_cli.overlay`` (see ``api.py``), imported on first use."""
    if name in ("explain", "overlay", "Result"):
        from cnnvis_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'cnnvis_cli' has no attribute {name!r}")

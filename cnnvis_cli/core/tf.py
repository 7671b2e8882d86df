"""Import TensorFlow and Keras once, and keep their log output off the user's terminal.

TensorFlow's C++ runtime writes start-up lines ("oneDNN custom operations are on", "Could not
find cuda drivers", absl's "All log messages before absl::InitializeLog()") straight to file
descriptor 2, before any Python-level setting can take effect. We set the documented environment
variables and, while importing, point descriptor 2 at a temporary file; if the import fails, its
captured output is replayed so a broken installation still explains itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType

_modules: tuple[ModuleType, ModuleType] | None = None


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Redirect OS-level stderr (fd 2) to a temporary file for the duration of the block.

    The captured text is written back to stderr if the block raises.
    """
    try:
        sys.stderr.flush()
        saved_fd = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (e.g. embedded interpreter)
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        except BaseException:
            os.dup2(saved_fd, 2)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)


def tf_and_keras() -> tuple[ModuleType, ModuleType]:
    """Return ``(tensorflow, keras)``, importing them quietly on first use."""
    global _modules
    if _modules is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
        with quiet_native_stderr():
            import keras
            import tensorflow as tf
        tf.get_logger().setLevel(logging.ERROR)
        with contextlib.suppress(ImportError):
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        keras.utils.disable_interactive_logging()
        # Keras warns when a model built with a one-element input list gets a bare tensor.
        warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
        _modules = (tf, keras)
    return _modules

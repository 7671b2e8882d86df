"""Subprocess helpers for the benchmark (run as a script, never imported by the package).

``bench_child.py rss RESULT.json -- CNNVIS-ARGS...``
    Run the ``cnnvis`` command line in this process, then write its exit code, wall time and
    peak resident set size (``VmHWM`` from /proc/self/status) to RESULT.json.

``bench_child.py floor MODEL.keras``
    The start-up floor: import TensorFlow, load the model and run one forward + backward pass
    (GradientTape to the input) on one random image inside a ``tf.function`` — traced, as any
    safe gradient must be: eagerly, oneDNN's filter back-prop crashes on some Intel CPUs.
    Nothing of cnnvis is imported.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def rss(result_path: str, args: list[str]) -> int:
    start = time.perf_counter()
    sys.argv = ["cnnvis", *args]
    code: int = 0
    try:
        from cnnvis_cli.cli import main

        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(
            {
                "exit_code": code,
                "seconds": seconds,
                "peak_rss_kib": peak_rss_kib(),
                # ru_maxrss (KiB on Linux) survives execve: a child spawned by a big parent
                # reports at least the parent's RSS, so it is recorded but not judged
                "ru_maxrss_kib": usage.ru_maxrss,
                "user_s": usage.ru_utime,
                "system_s": usage.ru_stime,
            },
            handle,
        )
    return 0


def peak_rss_kib() -> int:
    """VmHWM: the peak resident set size of this process's own address space."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def floor(model_path: str) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    model = keras.saving.load_model(model_path, compile=False)
    height, width, channels = (int(d) for d in model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    image = tf.constant(rng.uniform(0, 255, (1, height, width, channels)).astype("float32"))

    @tf.function(autograph=False)
    def input_gradient(image):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(image)
            outputs = model(image / 255.0, training=False)
            score = tf.reduce_max(outputs, axis=-1)
        return tape.gradient(score, image)

    return 0 if np.isfinite(input_gradient(image).numpy()).all() else 1


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "rss":
        rest = argv[2:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return rss(argv[1], rest)
    if len(argv) == 2 and argv[0] == "floor":
        return floor(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Warm daemon vs cold in-process: one-image Grad-CAM on MobileNetV2 224x224, as a shell sees it.

Usage::

    .venv/bin/python benchmarks/bench_daemon.py [--repeats 5] [--cold-runs 2] [--results PATH]

Every figure is the wall time of a subprocess, ``cnnvis gradcam img.jpg -m model.keras``, as a
user's shell would run it: cold with ``--no-daemon`` (Python start, TensorFlow import, model
load, one eager Grad-CAM, PNG and summary), warm with ``--daemon`` against a daemon started for
this run in a private runtime folder (stopped at the end). The warm figure is the best of
``--repeats`` calls after one warm-up call; all calls are recorded, including the second one,
which traces the method (the daemon runs a single-image method eagerly on first use, as an
in-process run does, and traces it when it comes again). The ratio cold / warm is judged
(target >= 10) as well as the warm time (target <= 0.3 s); both timings come from the same run,
interleaved with nothing else, but the machine is shared: other processes' load shows in both.

Also recorded: the daemon's idle RSS holding one MobileNetV2, ``python -X importtime`` of the
client path vs ``cnnvis_cli.cli`` (Typer), and whether the warm outputs are byte-identical to the
cold ones. The model (random weights: same compute as trained ones) is generated once into
``benchmarks/_work/daemon/`` (git-ignored); results go to
``benchmarks/_work/daemon/results.json`` unless ``--results`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import ROOT, WORK, cnnvis_command, load_average, machine_info, rounded

DAEMON_WORK = WORK / "daemon"
MODEL = DAEMON_WORK / "mobilenetv2_224.keras"
IMAGE = DAEMON_WORK / "img.jpg"
WARM_TARGET_S = 0.3
RATIO_TARGET = 10.0
MAKE_MODEL = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from cnnvis_cli.core.tf import tf_and_keras
_, keras = tf_and_keras()
keras.utils.set_random_seed(0)
keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(sys.argv[1])
"""


def prepare() -> None:
    DAEMON_WORK.mkdir(parents=True, exist_ok=True)
    if not MODEL.is_file():
        print(f"saving MobileNetV2 (random weights) to {MODEL} ...", flush=True)
        subprocess.run([sys.executable, "-c", MAKE_MODEL, str(MODEL)], check=True)
    if not IMAGE.is_file():
        shutil.copy(ROOT / "sample_images" / "scene_02.jpg", IMAGE)


def environment(runtime: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CNNVIS_DAEMON"}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def timed(command: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=DAEMON_WORK, capture_output=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace')[-1500:]}"
        )
    return seconds, result


def gradcam(out: str, mode: str) -> list[str]:
    return [*cnnvis_command(), "gradcam", IMAGE.name, "-m", MODEL.name, "-o", out, mode]


def import_ms(module: str) -> float:
    """Cumulative import time of ``module`` (ms), best of 3, from ``python -X importtime``."""
    best = float("inf")
    for _ in range(3):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=True,
        )
        for line in result.stderr.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == module:
                best = min(best, int(parts[1]) / 1000)
    return best


def same_outputs(a: Path, b: Path) -> bool:
    names = ("img_gradcam.png",)
    return all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed warm calls (best is judged)")
    parser.add_argument("--cold-runs", type=int, default=2, help="cold in-process calls (best)")
    parser.add_argument("--results", type=Path, default=DAEMON_WORK / "results.json")
    args = parser.parse_args()
    prepare()
    runtime = Path(tempfile.mkdtemp(prefix="cnvb", dir="/tmp"))
    env = environment(runtime)
    record: dict[str, Any] = {"machine": machine_info(), "load_average_before": load_average()}
    try:
        cold = []
        for i in range(args.cold_runs):
            seconds, _ = timed(gradcam(f"cold{i}", "--no-daemon"), env)
            cold.append(seconds)
            print(f"cold in-process call {i + 1}: {seconds:.3f} s", flush=True)
        start_s, started = timed(
            [*cnnvis_command(), "daemon", "start", "--idle-timeout", "10m"], env
        )
        print(started.stdout.decode().strip(), f"({start_s:.1f} s)", flush=True)
        warm = []
        for i in range(1 + args.repeats):
            seconds, _ = timed(gradcam(f"warm{i}", "--daemon"), env)
            warm.append(seconds)
            kind = "warm-up" if i == 0 else "timed"
            print(f"daemon call {i + 1} ({kind}): {seconds:.3f} s", flush=True)
        status = json.loads(
            subprocess.run(
                [*cnnvis_command(), "daemon", "status", "--json"],
                env=env,
                capture_output=True,
                check=True,
            ).stdout
        )
        timed_calls = warm[1:]
        best_cold, best_warm = min(cold), min(timed_calls)
        ratio = best_cold / best_warm
        record.update(
            {
                "cold_s": cold,
                "daemon_start_s": start_s,
                "daemon_calls_s": warm,
                "warm_best_s": best_warm,
                "warm_median_s": statistics.median(timed_calls),
                "cold_best_s": best_cold,
                "ratio_cold_over_warm": ratio,
                "idle_rss_bytes": status.get("rss_bytes"),
                "peak_rss_bytes": status.get("peak_rss_bytes"),
                "models_held": [m["source"] for m in status["warm"]["models"]],
                "outputs_identical": same_outputs(DAEMON_WORK / "cold0", DAEMON_WORK / "warm1"),
                "import_ms": {
                    "cnnvis_cli.daemon.client": import_ms("cnnvis_cli.daemon.client"),
                    "cnnvis_cli.cli": import_ms("cnnvis_cli.cli"),
                },
                "targets": {"warm_best_s": WARM_TARGET_S, "ratio_cold_over_warm": RATIO_TARGET},
                "passed": best_warm <= WARM_TARGET_S and ratio >= RATIO_TARGET,
            }
        )
    finally:
        subprocess.run([*cnnvis_command(), "daemon", "stop"], env=env, capture_output=True)
        shutil.rmtree(runtime, ignore_errors=True)
        record["load_average_after"] = load_average()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(rounded(record), indent=2) + "\n")
    mib = (record["idle_rss_bytes"] or 0) / 1024**2
    imports = record["import_ms"]
    print(
        f"\nwarm (daemon) best of {args.repeats}: {best_warm:.3f} s "
        f"(median {record['warm_median_s']:.3f} s; target <= {WARM_TARGET_S} s)\n"
        f"cold (in-process) best of {args.cold_runs}: {best_cold:.3f} s\n"
        f"ratio cold / warm: {ratio:.1f}x (target >= {RATIO_TARGET:.0f}x)\n"
        f"idle daemon RSS with one MobileNetV2: {mib:.0f} MiB\n"
        f"client imports: daemon.client {imports['cnnvis_cli.daemon.client']:.1f} ms, "
        f"cli (Typer) {imports['cnnvis_cli.cli']:.1f} ms\n"
        f"outputs byte-identical: {record['outputs_identical']}\n"
        f"load average before/after: {record['load_average_before']} / "
        f"{record['load_average_after']} (2 shared cores: other work slows both sides)\n"
        f"results: {args.results}"
    )
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

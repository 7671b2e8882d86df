"""``--engine ray`` against the local engine, and the per-forward cost behind a cluster estimate.

Usage::

    .venv/bin/python benchmarks/bench_ray.py [--images 200] [--repeats 2] [--model mobilenetv2]
                                             [--workers 2] [--results PATH]

Both engines run Grad-CAM (batch 16) over the same folder of generated scenes
(``cnnvis_cli.demo.scenes``, 320 x 240 JPEG), in this process as ``cnnvis_cli.core.runner.run``,
interleaved (local, ray, local, ray, ...). A local Ray is started once (``ray.init`` with the
engine's own settings: its time is the reported start-up, outside every ratio); each Ray run then
starts its own actor pool, whose start (a process per worker, TensorFlow import, model load,
first trace) shows in its time to first result. The judged figure is the steady-state rate,
taken identically for both engines from the moment each finished record reached the driver's
journal: (records after the first batch) / (time from the first batch's arrival to the last
record). The end-to-end rates (first result included, Ray start-up not) are recorded too.

The occlusion part times ``cnnvis occlusion --patch 16 --stride 8`` (729 positions) on MobileNetV2
224 x 224, one image per step, with the local engine: wall and CPU seconds per image after the
first (which traces), per position and per forward pass actually run (chunks of ``eval_batch``
copies, plus one unoccluded batch). These are the measured inputs of the paper estimate in the
README's "At scale" section.

The model is ``keras:MobileNetV2`` (random weights; the same compute as trained ones) saved once
into ``benchmarks/_work/``, or the bundled demo model with ``--model demo``. Nothing is
downloaded. Results go to ``benchmarks/_work/ray/results.json`` unless ``--results`` says
otherwise. The machine is shared: the load average is recorded at the start and the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench_common import WORK, load_average, machine_info, rounded
from bench_data import demo_model_path, image_folder, saved_application

RAY_WORK = WORK / "ray"
RATIO_TARGET = 0.8
OCCLUSION_PATCH, OCCLUSION_STRIDE, OCCLUSION_SIDE = 16, 8, 224


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each engine")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors")
    parser.add_argument("--model", choices=("mobilenetv2", "demo"), default="mobilenetv2")
    parser.add_argument("--occlusion-images", type=int, default=3, help="0 skips the part")
    parser.add_argument("--results", type=Path, default=RAY_WORK / "results.json")
    return parser.parse_args(argv)


class Stamps:
    """The time (and this process' CPU time) at which each finished record was journalled."""

    def __init__(self) -> None:
        from cnnvis_cli.output.journal import Journal

        self.times: list[tuple[float, float]] = []
        self._add = Journal.add
        stamps = self

        def add(journal: Journal, record: Any) -> None:
            stamps._add(journal, record)
            stamps.times.append((time.perf_counter(), time.process_time()))

        Journal.add = add  # type: ignore[method-assign]


def timed_run(stamps: Stamps, **options: Any) -> dict[str, Any]:
    """One in-process run; its wall time, exit code and record arrival times."""
    from rich.console import Console

    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.runner import run

    out = Path(options["out"])
    shutil.rmtree(out, ignore_errors=True)
    stamps.times.clear()
    quiet = Console(file=io.StringIO())
    start = time.perf_counter()
    code = run(RunConfig(quiet=True, **options), stdout=quiet, stderr=quiet)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    if code != 0:
        raise RuntimeError(f"run exited {code}: {summary['totals']}")
    return {
        "wall_s": wall,
        "times": [t - start for t, _ in stamps.times],
        "cpu": [c for _, c in stamps.times],
        "summary_seconds": summary["totals"]["seconds"],
        "engine": summary.get("engine"),
    }


def rates(result: dict[str, Any], batch: int) -> dict[str, Any]:
    """Steady-state images/s (after the first batch arrived) and end-to-end images/s."""
    times = result["times"]
    first = times[min(batch, len(times)) - 1]
    steady = (len(times) - batch) / (times[-1] - first) if times[-1] > first else None
    return {
        "wall_s": result["wall_s"],
        "first_result_s": times[0],
        "steady_images_per_s": steady,
        "end_to_end_images_per_s": len(times) / times[-1],
        "engine": result["engine"],
    }


def start_local_ray(workers: int) -> float:
    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.engines.ray import start_ray

    start = time.perf_counter()
    start_ray(RunConfig(engine="ray", workers=workers), workers)
    return time.perf_counter() - start


def engines_case(args: argparse.Namespace, model: Path, folder: Path) -> dict[str, Any]:
    stamps = Stamps()
    common = {"images": [str(folder)], "model": str(model), "batch_size": 16}
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    startup = start_local_ray(args.workers)
    print(f"local Ray started in {startup:.1f} s", flush=True)
    for repeat in range(args.repeats):
        for engine in ("local", "ray"):
            extra = {"engine": "ray", "workers": args.workers} if engine == "ray" else {}
            out = RAY_WORK / f"out-{engine}"
            result = rates(timed_run(stamps, out=out, **common, **extra), 16)
            runs[engine].append(result)
            print(
                f"  {engine} #{repeat + 1}: {result['steady_images_per_s']:.1f} images/s steady, "
                f"{result['end_to_end_images_per_s']:.1f} end to end, first result "
                f"{result['first_result_s']:.1f} s, wall {result['wall_s']:.1f} s",
                flush=True,
            )
    import ray

    ray.shutdown()

    def best(engine: str, key: str) -> float:
        return max(r[key] for r in runs[engine] if r[key] is not None)

    ratio = best("ray", "steady_images_per_s") / best("local", "steady_images_per_s")
    end_to_end = best("ray", "end_to_end_images_per_s") / best("local", "end_to_end_images_per_s")
    return {
        "images": args.images,
        "workers": args.workers,
        "ray_init_s": startup,
        "runs": runs,
        "steady_ratio": ratio,
        "end_to_end_ratio": end_to_end,
        "target": RATIO_TARGET,
        "passed": ratio >= RATIO_TARGET,
    }


def occlusion_case(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    """Per-image, per-position and per-forward cost of 16/8 occlusion on 224 x 224."""
    import math

    stamps = Stamps()
    folder = image_folder(
        "ray_occlusion", args.occlusion_images, OCCLUSION_SIDE, OCCLUSION_SIDE, ".png", seed=7
    )
    eval_batch = 64
    result = timed_run(
        stamps,
        images=[str(folder)],
        model=str(model),
        out=RAY_WORK / "out-occlusion",
        batch_size=1,
        eval_batch=eval_batch,
        method="occlusion",
        method_options=_occlusion_options(),
    )
    times, cpu = result["times"], result["cpu"]
    per_image = (times[-1] - times[0]) / (len(times) - 1)
    cpu_per_image = (cpu[-1] - cpu[0]) / (len(cpu) - 1)
    positions = ((OCCLUSION_SIDE - OCCLUSION_PATCH) // OCCLUSION_STRIDE + 1) ** 2
    forwards = math.ceil(positions / eval_batch) * eval_batch + eval_batch
    return {
        "images": len(times),
        "positions_per_image": positions,
        "forwards_run_per_image": forwards,
        "seconds_per_image": per_image,
        "cpu_seconds_per_image": cpu_per_image,
        "ms_per_position": 1000 * per_image / positions,
        "cpu_ms_per_forward": 1000 * cpu_per_image / forwards,
        "cpu_ms_per_position": 1000 * cpu_per_image / positions,
    }


def _occlusion_options() -> Any:
    from cnnvis_cli.methods import get_method

    options = get_method("occlusion").options_type
    return options(patch=OCCLUSION_PATCH, stride=OCCLUSION_STRIDE)


def run_case(quick: bool) -> tuple[dict[str, Any], list[Any]]:
    """The ``ray`` case of ``benchmarks/run.py``: the engines' ratio on MobileNetV2 (no
    occlusion part); ``quick`` uses 64 images and one run of each engine."""
    from bench_common import Check

    args = parse_args(["--images", "64", "--repeats", "1"] if quick else [])
    RAY_WORK.mkdir(parents=True, exist_ok=True)
    model = saved_application("mobilenetv2", "keras:MobileNetV2")
    folder = image_folder(f"ray_scenes_{args.images}", args.images, 320, 240, ".jpg", seed=3)
    result = engines_case(args, model, folder)
    check = Check(
        "ray",
        "mobilenetv2",
        f"ray ({args.workers} workers) / local images/s, steady",
        result["steady_ratio"],
        RATIO_TARGET,
        ">=",
        detail=(
            f"start-up {result['ray_init_s']:.1f} s, end to end {result['end_to_end_ratio']:.2f}"
        ),
    )
    return result, [check]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    RAY_WORK.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print(f"bench_ray: {info['cpu_model']}, {info['usable_cores']} cores, load {load_average()}")
    if args.model == "demo":
        model = demo_model_path()
        if model is None:
            raise SystemExit("the demo model cnnvis_cli/data/shapes.keras is absent")
    else:
        model = saved_application("mobilenetv2", "keras:MobileNetV2")
    folder = image_folder("ray_scenes", args.images, 320, 240, ".jpg", seed=3)
    results: dict[str, Any] = {"machine": info, "model": args.model}
    results["engines"] = engines_case(args, model, folder)
    engines = results["engines"]
    print(
        f"ray / local images/s, steady state: {engines['steady_ratio']:.3f} (target >= "
        f"{RATIO_TARGET}); end to end (first results included, Ray start-up not): "
        f"{engines['end_to_end_ratio']:.3f}; Ray start-up {engines['ray_init_s']:.1f} s",
        flush=True,
    )
    if args.occlusion_images > 1:
        mobilenet = saved_application("mobilenetv2", "keras:MobileNetV2")
        occlusion = occlusion_case(args, mobilenet)
        results["occlusion"] = occlusion
        print(
            f"occlusion 16/8 on MobileNetV2 224x224: {occlusion['seconds_per_image']:.2f} s and "
            f"{occlusion['cpu_seconds_per_image']:.2f} CPU s per image, "
            f"{occlusion['cpu_ms_per_forward']:.2f} CPU ms per forward pass run",
            flush=True,
        )
    info["load_average_end"] = load_average()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(rounded(results), indent=2) + "\n", encoding="utf-8")
    print(f"load average now {info['load_average_end']}; wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

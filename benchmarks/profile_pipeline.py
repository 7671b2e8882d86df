"""Profile the Grad-CAM pipeline case with py-spy and say where the time goes.

py-spy is an investigation tool, not a project dependency (``.venv/bin/pip install py-spy``)::

    .venv/bin/py-spy record -r 100 --idle --threads -f raw -o benchmarks/_work/pipeline.raw \\
        -- .venv/bin/python benchmarks/profile_pipeline.py run --model keras:MobileNetV2
    .venv/bin/python benchmarks/profile_pipeline.py analyze benchmarks/_work/pipeline.raw

``run`` warms a Grad-CAM method up (tracing excluded) and runs the pipeline of the benchmark
(64 640x480 JPEGs, batch 16) several times. ``analyze`` splits the samples of the main thread
(model compute, waiting for decoded inputs, waiting for writes, ...) and of the decode/write pool
threads (decode, resize, overlay, PNG encode, file write, idle). TensorFlow's own C++ threads are
not Python threads, so py-spy does not see them: the benchmark's CPU accounting covers them.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def run(model: str, repeats: int) -> None:
    import bench_cases as cases
    import numpy as np
    from bench_common import WORK
    from bench_data import ModelSpec

    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.discover import discover
    from cnnvis_cli.core.runner import build_method

    spec = ModelSpec("profile", model, model)
    adapter = cases.Models().adapter(spec)
    folder = cases.scenes(cases.FULL)
    config = RunConfig(
        method="gradcam",
        images=[str(folder)],
        model=model,
        out=WORK / "out" / "profile",
        batch_size=cases.BATCH,
        quiet=True,
    )
    items, _ = discover(config.images, out_dir=config.out)
    method = build_method(config, adapter)
    method.explain(np.stack(cases.model_tensors(items[: cases.BATCH], adapter)))
    start = time.perf_counter()
    for _ in range(repeats):
        cases.timed_run_method(config, adapter, method, items)
    seconds = time.perf_counter() - start
    print(f"{repeats} x {len(items)} images in {seconds:.2f} s")


def _has(frames: list[str], prefix: str) -> bool:
    return any(frame.startswith(prefix) for frame in frames)


def _main_thread_kind(frames: list[str], text: str) -> str | None:
    if not _has(frames, "run_method ("):
        return None
    if _has(frames, "Method.explain (") or "._explain (" in text:
        return "model compute (explain)"
    if _has(frames, "ImageSource._collect ("):
        return "waiting for a decoded batch"
    if _has(frames, "_record ("):
        return "waiting for a write (queue full)"
    if _has(frames, "OutputWriter.close ("):
        return "final drain of writes"
    if "stack (numpy" in text:
        return "np.stack of the batch"
    return "other"


def _pool_thread_kind(frames: list[str], text: str) -> str | None:
    if _has(frames, "ImageSource._load ("):
        if "decode_image (" in text:
            return "decode"
        return "resize to model input" if "to_model_tensor (" in text else "load, other"
    if _has(frames, "OutputWriter.render ("):
        if "write_png (" in text:
            leaf = frames[-1]
            return "PNG encode" if leaf.startswith("write_png (") else "PNG file write"
        if "picture (" in text or "overlay (" in text:
            return "overlay (upsample, colormap, blend)"
        return "render, other"
    if (frames and frames[-1].startswith("_worker (")) or "wait (threading" in text:
        return "idle"
    return None


def analyze(path: Path, rate: float) -> None:
    main: collections.Counter[str] = collections.Counter()
    pool: collections.Counter[str] = collections.Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        head, *frames = stack.split(";")
        text = ";".join(frames)
        if "MainThread" in head:
            kind = _main_thread_kind(frames, text)
            if kind is not None:
                main[kind] += int(count)
        else:
            kind = _pool_thread_kind(frames, text)
            if kind is not None:
                pool[kind] += int(count)
    for title, counter in (("main thread", main), ("decode/write threads (summed)", pool)):
        total = sum(counter.values()) or 1
        print(f"{title}: {total / rate:.2f} s sampled")
        for kind, count in counter.most_common():
            print(f"  {count / rate:7.2f} s {100 * count / total:5.1f} %  {kind}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run the pipeline (under py-spy)")
    run_parser.add_argument("--model", default="keras:MobileNetV2")
    run_parser.add_argument("--repeats", type=int, default=5)
    analyze_parser = sub.add_parser("analyze", help="summarise a py-spy raw profile")
    analyze_parser.add_argument("raw", type=Path)
    analyze_parser.add_argument("--rate", type=float, default=100.0, help="py-spy -r value")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.model, args.repeats)
    else:
        analyze(args.raw, args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())

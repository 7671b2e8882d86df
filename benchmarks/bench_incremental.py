"""Benchmark incremental occlusion (cnnvis_cli.incremental) against naive occlusion.

Random-weight ``keras.applications`` models at 224 x 224 (logit heads: random softmax outputs
are nearly uniform), patch 16, stride 8 (27 x 27 = 729 positions), one image from
``sample_images`` scaled to [-1, 1], the per-channel mean as baseline, batch size 64; and
cnnvis' trained demo model (``shapes``, 96 x 96, patch 8, stride 4, 529 positions).

* naive: batched full forward passes of occluded copies built in TF (as
  ``methods/occlusion.py`` does), one ``tf.function``;
* exact: ``IncrementalOcclusion.outputs`` on the same positions;
* tau: the approximate engine (tau = 0.4) on the same positions;
* approx: tau = 0.4 plus adaptive drill-down over the whole grid (its wall time counts all
  729 positions of the map it returns);
* drill: adaptive drill-down with the exact engine (same accounting).

Throughputs are positions per second, timed in the same process, interleaved, best of
``--reps``, after a warm-up that traces every function. Naive and exact are timed on the first
``--batches`` batches (their cost per position does not depend on the position). The exact map
of all 729 positions comes from the engine and is checked against naive outputs on the timed
positions; approximate maps are compared with it (Pearson r of the per-pixel drop maps of the
top class). Also recorded: the FLOP ratio of the engine and the ideal one, and per-layer-type
eager profiles of one batch (incremental and naive).

    python benchmarks/bench_incremental.py [--models VGG16 ResNet50 MobileNetV2] [--reps 2]

Writes ``benchmarks/_work/incremental.json`` and prints a table. The machine has 2 shared
cores: compare ratios measured in one run, not absolute rates across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from cnnvis_cli.core.tf import tf_and_keras  # noqa: E402
from cnnvis_cli.incremental import IncrementalOcclusion, drill_down, per_pixel_mean  # noqa: E402
from cnnvis_cli.methods.occlusion import patch_corners  # noqa: E402

WORK = ROOT / "benchmarks" / "_work"
TARGETS = {"VGG16": 5.0, "ResNet50": 1.8, "MobileNetV2": 1.8}
APPROX_TARGET, R_TARGET = 10.0, 0.95


def load_image(size: int) -> np.ndarray:
    import cv2

    paths = sorted((ROOT / "sample_images").glob("*.jpg")) + sorted(
        (ROOT / "sample_images").glob("*.png")
    )
    if paths:
        bgr = cv2.imread(str(paths[0]), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(cv2.resize(bgr, (size, size)), cv2.COLOR_BGR2RGB)
    else:
        rgb = np.random.default_rng(0).integers(0, 256, (size, size, 3))
    return (rgb.astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def naive_function(model: Any) -> Any:
    """Outputs of occluded copies: one traced function, masks built from the corners."""
    tf, _ = tf_and_keras()

    @tf.function
    def run(image, baseline, corners, patch):
        height, width, channels = (int(d) for d in image.shape)
        rows = tf.range(height)[None, :]
        cols = (tf.range(width * channels) // channels)[None, :]
        y0, x0 = corners[:, 0:1], corners[:, 1:2]
        mask = ((rows >= y0) & (rows < y0 + patch))[:, :, None] & (
            (cols >= x0) & (cols < x0 + patch)
        )[:, None, :]
        flat = [height, width * channels]
        x = tf.where(mask, tf.reshape(baseline, flat)[None], tf.reshape(image, flat)[None])
        return model(tf.reshape(x, [-1, height, width, channels]), training=False)

    return run


def batches(corners: np.ndarray, size: int) -> list[np.ndarray]:
    """Chunks of exactly ``size`` (the last padded by wrapping), as the engine does."""
    out = []
    for start in range(0, len(corners), size):
        index = np.arange(start, start + size) % len(corners)
        out.append(corners[index].astype(np.int32))
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def profile_by_class(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    totals: dict[str, dict[str, float]] = defaultdict(lambda: {"gather_s": 0.0, "compute_s": 0.0})
    for row in rows:
        key = f"{row['class']}:{row['mode']}"
        totals[key]["gather_s"] += row["gather_s"]
        totals[key]["compute_s"] += row["compute_s"]
    ordered = sorted(totals.items(), key=lambda kv: -(kv[1]["gather_s"] + kv[1]["compute_s"]))
    return {k: {n: round(v, 4) for n, v in d.items()} for k, d in ordered}


def naive_profile(engine: IncrementalOcclusion, image, baseline, corners, patch) -> dict:
    """Eager per-layer-type seconds of one naive batch (full forward of occluded copies)."""
    tf, _ = tf_and_keras()
    copies = np.repeat(image[None], len(corners), axis=0)
    for i, (y, x) in enumerate(corners):
        copies[i, y : y + patch, x : x + patch] = baseline[y : y + patch, x : x + patch]
    timings: list[Any] = []
    engine.plan.run(tf.constant(copies), timings)
    totals: dict[str, float] = defaultdict(float)
    for step, seconds in timings:
        totals[step.class_name] += seconds
    return {k: round(v, 4) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def load_case(name: str, args: argparse.Namespace) -> tuple[Any, np.ndarray, int, int, int]:
    """(model, model-input image, patch, stride, coarse stride) of one benchmark case.

    ``shapes`` is cnnvis' trained demo classifier (96 x 96, raw 0..255 input: its first layer
    rescales), the one case with trained weights: approximate maps are judged on it too.
    """
    _, keras = tf_and_keras()
    if name == "shapes":
        model = keras.models.load_model(ROOT / "cnnvis_cli" / "data" / "shapes.keras")
        image = (load_image(96) + 1.0) * 127.5
        return model, image.astype(np.float32), 8, 4, 8
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(args.size, args.size, 3), classifier_activation=None
    )
    return model, load_image(args.size), args.patch, args.stride, args.coarse_stride


def bench_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    tf, _ = tf_and_keras()
    model, image, patch, stride, coarse_stride = load_case(name, args)
    size, bs = image.shape[0], args.batch_size
    baseline = np.broadcast_to(image.mean(axis=(0, 1)), image.shape).astype(np.float32)
    ys, xs = patch_corners(size, patch, stride), patch_corners(size, patch, stride)
    corners = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
    total = len(corners)
    timed = corners[: bs * args.batches]

    exact = IncrementalOcclusion(model, (size, size, 3), batch_size=bs)
    approx = IncrementalOcclusion(model, (size, size, 3), batch_size=bs, tau=args.tau)
    ref = exact.prepare(image, baseline)
    approx.prepare(image, baseline)
    target = int(np.argmax(ref))
    naive = naive_function(model)
    image_t, baseline_t = tf.constant(image), tf.constant(baseline)

    def run_naive(points: np.ndarray) -> np.ndarray:
        outs = [
            np.asarray(naive(image_t, baseline_t, tf.constant(c), tf.constant(patch)))
            for c in batches(points, bs)
        ]
        return np.concatenate(outs)[: len(points)]

    def evaluate(points: np.ndarray) -> np.ndarray:
        return ref[target] - approx.outputs(points, patch)[:, target]

    def evaluate_exact(points: np.ndarray) -> np.ndarray:
        return ref[target] - exact.outputs(points, patch)[:, target]

    def run_drill(function: Any = evaluate) -> Any:
        return drill_down(
            function,
            size,
            size,
            patch,
            stride,
            coarse_stride=coarse_stride,
            keep=args.keep,
        )

    # warm-up: trace everything once
    t0 = time.perf_counter()
    run_naive(timed[:bs])
    warm_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    exact.outputs(timed[:bs], patch)
    warm_exact = time.perf_counter() - t0
    approx.outputs(timed[:bs], patch)
    run_drill()

    best: dict[str, float] = defaultdict(lambda: float("inf"))
    for _ in range(args.reps):
        for key, fn in (
            ("naive", lambda: run_naive(timed)),
            ("exact", lambda: exact.outputs(timed, patch)),
            ("tau", lambda: approx.outputs(timed, patch)),
            ("approx", run_drill),
            ("drill", lambda: run_drill(evaluate_exact)),
        ):
            t0 = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t0)

    # correctness: exact engine vs naive on the timed positions; maps over the whole grid
    out_naive = run_naive(timed)
    out_exact = exact.outputs(timed, patch)
    ref_naive = np.asarray(model(image[None], training=False))[0]
    d_naive = ref_naive[None] - out_naive
    d_exact = ref[None] - out_exact
    exact_all = exact.outputs(corners, patch)
    drops_exact = ref[target] - exact_all[:, target]
    map_exact, _ = per_pixel_mean(corners, drops_exact, patch, size, size)
    drops_tau = ref[target] - approx.outputs(corners, patch)[:, target]
    map_tau, _ = per_pixel_mean(corners, drops_tau, patch, size, size)
    drill = run_drill()

    drill_exact = run_drill(evaluate_exact)
    rate = {k: (total if k in ("approx", "drill") else len(timed)) / v for k, v in best.items()}
    est, est_tau = exact.estimate_for(patch, stride), approx.estimate_for(patch, stride)
    result = {
        "model": name,
        "input": list(image.shape),
        "patch": patch,
        "stride": stride,
        "positions": total,
        "timed_positions": len(timed),
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "positions_per_s": {k: round(v, 2) for k, v in rate.items()},
        "speedup_exact": round(rate["exact"] / rate["naive"], 2),
        "speedup_tau": round(rate["tau"] / rate["naive"], 2),
        "speedup_approx": round(rate["approx"] / rate["naive"], 2),
        "speedup_drill_exact": round(rate["drill"] / rate["naive"], 2),
        "target_exact": TARGETS.get(name),
        "exact_vs_naive": {
            "pearson_drops": round(pearson(d_exact, d_naive), 7),
            "max_abs_diff_over_max_drop": float(
                np.abs(d_exact - d_naive).max() / np.abs(d_naive).max()
            ),
        },
        "r_tau_map": round(pearson(map_tau, map_exact), 4),
        "r_approx_map": round(pearson(drill.drop_map, map_exact), 4),
        "r_drill_exact_map": round(pearson(drill_exact.drop_map, map_exact), 4),
        "drill_down": {
            "coarse_stride": coarse_stride,
            "keep": args.keep,
            "evaluated": drill.evaluated,
            "coarse": drill.coarse_positions,
            "fraction_refined_pixels": round(float(drill.refined.mean()), 3),
        },
        "flop_ratio": round(est.flop_ratio, 4),
        "ideal_ratio": round(est.ideal_ratio, 4),
        "flop_ratio_tau": round(est_tau.flop_ratio, 4),
        "estimate": est.summary(),
        "warmup_s": {"naive": round(warm_naive, 2), "exact": round(warm_exact, 2)},
        "traces": {"exact": exact.traces, "approx": approx.traces},
        "profile_positions": args.profile_positions,
        "profile_incremental_eager_s": profile_by_class(
            exact.profile(timed[: args.profile_positions], patch)
        ),
        "profile_naive_eager_s": naive_profile(
            exact, image, baseline, timed[: args.profile_positions], patch
        ),
    }
    return result


def machine() -> dict[str, Any]:
    tf, keras = tf_and_keras()
    return {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def table(results: list[dict[str, Any]]) -> str:
    head = (
        f"{'model':12s} {'naive/s':>8s} {'exact/s':>8s} {'exact x':>8s} {'target':>7s} "
        f"{'tau x':>6s} {'approx x':>9s} {'r tau':>6s} {'r appr':>7s} {'drill x':>8s} "
        f"{'r drill':>7s} {'flops':>6s} {'ideal':>6s} {'r exact':>9s}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        rate = r["positions_per_s"]
        lines.append(
            f"{r['model']:12s} {rate['naive']:8.1f} {rate['exact']:8.1f} "
            f"{r['speedup_exact']:8.2f} {r['target_exact'] or 0:7.1f} {r['speedup_tau']:6.2f} "
            f"{r['speedup_approx']:9.2f} {r['r_tau_map']:6.3f} {r['r_approx_map']:7.3f} "
            f"{r['speedup_drill_exact']:8.2f} {r['r_drill_exact_map']:7.3f} "
            f"{r['flop_ratio']:6.3f} {r['ideal_ratio']:6.3f} "
            f"{r['exact_vs_naive']['pearson_drops']:9.6f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=["VGG16", "ResNet50", "MobileNetV2", "shapes"]
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=3, help="timed batches (naive, exact)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--tau", type=float, default=0.4)
    parser.add_argument("--coarse-stride", type=int, default=16)
    parser.add_argument("--keep", type=float, default=0.25)
    parser.add_argument("--profile-positions", type=int, default=16)
    parser.add_argument("--out", type=Path, default=WORK / "incremental.json")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    report = {"machine": machine(), "settings": vars(args) | {"out": str(args.out)}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        print(f"{name} ...", flush=True)
        results.append(bench_model(name, args))
        print(table(results[-1:]), flush=True)
        report["results"] = results  # written after every model: partial runs keep results
        report["machine"]["load_average"] = [round(x, 2) for x in os.getloadavg()]
        args.out.write_text(json.dumps(report, indent=2))
    print()
    print(table(results))
    print(f"\nload average {report['machine']['load_average']}; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

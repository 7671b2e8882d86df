"""cnnvis benchmark: throughput, start-up and memory, as ratios measured in one run.

Usage::

    .venv/bin/python benchmarks/run.py [--quick] [--models demo,mobilenetv2,resnet50]
                                       [--cases pipeline,occlusion,startup,memory,methods,ray]

Generated inputs and models go to ``benchmarks/_work/`` (git-ignored); results to
``benchmarks/results.json`` (``--quick`` writes ``benchmarks/_work/results-quick.json``).
See ``benchmarks/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench_common import (
    BENCH_DIR,
    WORK,
    Check,
    load_average,
    machine_info,
    rounded,
    usable_cores,
)

MODELS = ("demo", "mobilenetv2", "resnet50")
CASES = (
    "pipeline",
    "occlusion",
    "startup",
    "memory",
    "methods",
    "incremental",
    "daemon",
    "hostile",
    "ray",
)
DEFAULT_CASES = CASES[:-1]  # ray (--engine ray vs local; needs cnnvis[ray]) only when asked


def _list(value: str, allowed: tuple[str, ...], what: str) -> list[str]:
    chosen = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(allowed)}"
        )
    return chosen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke test")
    parser.add_argument(
        "--models",
        type=lambda v: _list(v, MODELS, "model"),
        default=list(MODELS),
        help=f"comma-separated, from {','.join(MODELS)}",
    )
    parser.add_argument(
        "--cases",
        type=lambda v: _list(v, CASES, "case"),
        default=list(DEFAULT_CASES),
        help=f"comma-separated, from {','.join(CASES)} (methods: per-method context figures; "
        "ray: bench_ray.py's engine ratio, not run by default)",
    )
    parser.add_argument("--results", type=Path, default=None, help="where to write the JSON")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a target is missed (for CI)"
    )
    return parser.parse_args(argv)


def _print_tables(checks: list[Check], results: dict[str, Any], notes: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=150)
    table = Table(title="cnnvis benchmark (ratios measured in one run)")
    for column, justify in (
        ("case", "left"),
        ("model", "left"),
        ("measure", "left"),
        ("raw", "right"),
        ("value", "right"),
        ("CPU-time ratio", "right"),
        ("target", "right"),
        ("pass", "center"),
    ):
        table.add_column(column, justify=justify)
    for check in checks:
        verdict = {True: "[green]yes[/green]", False: "[red]NO[/red]", None: "-"}[check.passed]
        value = "error" if check.value is None else f"{check.value:.3f}"
        unit = f" {check.unit}" if check.unit else ""
        table.add_row(
            check.case,
            check.model,
            check.name,
            check.detail,
            value + unit,
            f"{check.extra['cpu_time_ratio']:.3f}" if "cpu_time_ratio" in check.extra else "",
            f"{check.op} {check.target:g}{unit}",
            verdict,
        )
    console.print(table)

    pipeline = results.get("pipeline", {})
    if pipeline:
        detail = Table(title="Grad-CAM pipeline: where the CPU goes (per image)")
        for column in (
            "model",
            "decode ms",
            "resize ms",
            "overlay ms",
            "encode ms (jpg / png)",
            "model CPU ms",
            "CPU-bound ceiling",
            "CPU use pipeline",
            "CPU use limit",
            "decode/write threads CPU s",
        ):
            detail.add_column(column, justify="right")
        for key, r in pipeline.items():
            if "error" in r:
                continue
            s = r["serial_stage_ms_per_image"]
            detail.add_row(
                key,
                f"{s['decode_ms']:.1f}",
                f"{s['resize_to_model_ms']:.1f}",
                f"{s['overlay_ms']:.1f}",
                f"{s['encode_write_ms']:.1f} / "
                f"{r['serial_stage_ms_per_image_png']['encode_write_ms']:.1f}",
                f"{r['model_cpu_ms_per_image']:.1f}",
                f"{r['cpu_bound_ceiling']:.2f}",
                f"{r['pipeline_cpu_best']['cpu_utilisation']:.0%}",
                f"{r['limit_cpu_best']['cpu_utilisation']:.0%}",
                f"{r['pipeline_cpu_best']['transient_threads_cpu_s']:.2f}",
            )
        console.print(detail)

    occlusion = {k: r for k, r in results.get("occlusion", {}).items() if "error" not in r}
    if occlusion:
        detail = Table(title="Occlusion: forwards the method runs for one image")
        for column in (
            "model",
            "patch/stride",
            "positions",
            "chunks (<= 64)",
            "forwards run",
            "useful share",
            "ratio / useful share",
        ):
            detail.add_column(column, justify="right")
        for key, r in occlusion.items():
            detail.add_row(
                key,
                f"{r['patch']}/{r['stride']}",
                str(r["positions"]),
                str(r["chunks"]),
                str(r["forwards_executed"]),
                f"{r['useful_forward_fraction']:.3f}",
                f"{r['per_forward_efficiency']:.3f}",
            )
        console.print(detail)

    methods = results.get("methods", {})
    if methods and "error" not in methods:
        table = Table(title=f"Context: images/s per method on {methods['model']}, batch 16")
        table.add_column("method")
        table.add_column("images", justify="right")
        table.add_column("images/s", justify="right")
        table.add_column("CPU use", justify="right")
        for name, r in methods.items():
            if isinstance(r, dict):
                table.add_row(
                    name,
                    str(r["images"]),
                    f"{r['images_per_s']:.1f}",
                    f"{r['cpu_utilisation']:.0%}",
                )
        console.print(table)
    for note in notes:
        console.print(f"note: {note}", highlight=False, markup=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    load = info["load_average_start"]
    print(
        f"cnnvis benchmark ({'quick' if args.quick else 'full'}): {info['cpu_model']}, "
        f"{info['usable_cores']} cores, TensorFlow {info['tensorflow']}, load {load}",
        flush=True,
    )
    notes: list[str] = []
    if load and load[0] > usable_cores():
        notes.append(
            f"load average {load[0]} > {usable_cores()} cores at the start: other work is "
            "running, absolute numbers are depressed (ratios less so)"
        )

    import bench_cases as cases
    from bench_data import model_specs, scene_source

    settings = cases.QUICK if args.quick else cases.FULL
    specs, skipped = model_specs(args.models)
    if "pipeline" in args.cases or "occlusion" in args.cases:
        notes.extend(skipped)
    models = cases.Models()
    results: dict[str, Any] = {}
    checks: list[Check] = []

    def attempt(case: str, model: str, fn: Any) -> Any:
        label = f"{case}" + (f" [{model}]" if model != "-" else "")
        print(f"... {label}", flush=True)
        section = time.perf_counter()
        try:
            out = fn()
        except Exception as exc:
            traceback.print_exc()
            checks.append(Check(case, model, f"{case} failed: {exc}"[:80], None, 0, ">="))
            return {"error": f"{type(exc).__name__}: {exc}"}
        print(f"    done in {time.perf_counter() - section:.1f} s", flush=True)
        return out

    for case in ("pipeline", "occlusion"):
        if case not in args.cases:
            continue
        run_case = cases.pipeline_case if case == "pipeline" else cases.occlusion_case
        results[case] = {}
        for spec in specs:
            out = attempt(case, spec.key, lambda s=spec, f=run_case: f(s, models, settings))
            if "error" in out:
                results[case][spec.key] = out
            else:
                results[case][spec.key], new = out
                checks.extend(new)
    for case, fn in (("startup", cases.startup_case), ("memory", cases.memory_case)):
        if case in args.cases:
            out = attempt(case, "-", lambda f=fn: f(settings))
            if "error" in out:
                results[case] = out
            else:
                results[case], new = out
                checks.extend(new)
    import bench_external

    for case, fn in bench_external.CASES.items():
        if case in args.cases:
            out = attempt(case, "-", lambda f=fn: f(args.quick))
            if "error" in out:
                results[case] = out
            else:
                results[case], new = out
                checks.extend(new)
    if "ray" in args.cases:
        import bench_ray

        out = attempt("ray", "-", lambda: bench_ray.run_case(args.quick))
        if "error" in out:
            results["ray"] = out
        else:
            results["ray"], new = out
            checks.extend(new)
    if "methods" in args.cases:
        out = attempt("methods", "-", lambda: cases.methods_case(models, settings))
        if "error" in out:
            results["methods"] = out
        else:
            results["methods"], new_notes = out
            notes.extend(new_notes)

    for check in checks:
        cpu_ratio = check.extra.get("cpu_time_ratio")
        if check.value is not None and cpu_ratio and abs(check.value / cpu_ratio - 1) > 0.1:
            check.extra["noisy"] = True
            notes.append(
                f"{check.case} [{check.model}]: wall-clock ratio {check.value:.3f} and CPU-time "
                f"ratio {cpu_ratio:.3f} disagree by more than 10 %: outside load changed during "
                "the run; rerun, or read the CPU-time figure"
            )
    if "pipeline" in args.cases or "occlusion" in args.cases or "methods" in args.cases:
        notes.append(f"test images: {scene_source()}")
    info["load_average_end"] = load_average()
    elapsed = time.perf_counter() - started
    passed = [c.passed for c in checks]
    document = {
        "schema": 1,
        "machine": info,
        "run": {
            "quick": args.quick,
            "models": [s.key for s in specs],
            "cases": args.cases,
            "seconds": round(elapsed, 1),
        },
        "checks": [c.as_dict() for c in checks],
        "summary": {
            "passed": passed.count(True),
            "failed": passed.count(False),
            "errors": passed.count(None),
        },
        "results": rounded(results),
        "notes": notes,
    }
    target = args.results or (
        WORK / "results-quick.json" if args.quick else BENCH_DIR / "results.json"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

    _print_tables(checks, results, notes)
    print(
        f"{passed.count(True)} passed, {passed.count(False)} missed, {passed.count(None)} errors "
        f"in {elapsed:.0f} s; load average now {info['load_average_end']}; wrote {target}"
    )
    if passed.count(None):
        return 2
    return 1 if args.strict and passed.count(False) else 0


if __name__ == "__main__":
    sys.exit(main())

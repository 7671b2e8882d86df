"""``make bench`` cases that run a standalone benchmark script in a child process and turn its
JSON into judged figures: incremental occlusion (``bench_incremental.py``), the warm-start
daemon (``bench_daemon.py``) and hostile inputs' peak memory (``bench_hostile.py``).

Each script can also be run on its own (see its docstring); here the quick settings shrink them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_common import BENCH_DIR, WORK, Check

GIB = 2**30


def _run(script: str, args: list[str], result: Path, timeout: float = 4 * 3600) -> dict[str, Any]:
    subprocess.run(
        [sys.executable, str(BENCH_DIR / script), *args],
        check=True,
        timeout=timeout,
        stdout=subprocess.DEVNULL,
    )
    return json.loads(result.read_text())


def incremental_case(quick: bool) -> tuple[dict[str, Any], list[Check]]:
    """Exact incremental ÷ naive positions/s per model, and the approximations' speed and r."""
    result = WORK / "incremental.json"
    models = ["MobileNetV2"] if quick else ["VGG16", "ResNet50", "MobileNetV2"]
    data = _run("bench_incremental.py", ["--models", *models, "--out", str(result)], result)
    checks = []
    for row in data["results"]:
        name = row["model"]
        if "target_exact" in row:
            checks.append(
                Check(
                    "incremental",
                    name,
                    "exact incremental ÷ naive positions/s (patch 16, stride 8, 224²)",
                    row["speedup_exact"],
                    row["target_exact"],
                    ">=",
                    "x",
                    detail=f"FLOP ratio {row['flop_ratio']:.2f} (ideal {row['ideal_ratio']:.2f})",
                )
            )
            checks.append(
                Check(
                    "incremental",
                    name,
                    "approximate (tau 0.4 + drill-down) ÷ naive",
                    row["speedup_approx"],
                    10.0,
                    ">=",
                    "x",
                    detail=f"r = {row['r_approx_map']:.3f} against exact",
                )
            )
            # fast is not enough: the approximate map must also look like the exact one
            checks.append(
                Check(
                    "incremental",
                    name,
                    "approximate map: Pearson r against exact",
                    row["r_approx_map"],
                    0.95,
                    ">=",
                    detail="tau 0.4 + drill-down, top class, random weights",
                )
            )
    return data, checks


def daemon_case(quick: bool) -> tuple[dict[str, Any], list[Check]]:
    """Warm one-image Grad-CAM through the daemon vs a cold in-process call (MobileNetV2)."""
    result = WORK / "daemon" / "results.json"
    args = ["--results", str(result)] + (["--repeats", "3"] if quick else [])
    data = _run("bench_daemon.py", args, result)
    rss = (data.get("idle_rss_bytes") or 0) / 2**20
    return data, [
        Check(
            "daemon",
            "mobilenetv2",
            "warm one-image Grad-CAM, wall s",
            data["warm_best_s"],
            0.3,
            "<=",
            "s",
            detail=f"cold {data['cold_best_s']:.2f} s; idle RSS {rss:.0f} MiB",
        ),
        Check(
            "daemon", "mobilenetv2", "cold ÷ warm", data["ratio_cold_over_warm"], 10.0, ">=", "x"
        ),
    ]


def hostile_case(quick: bool) -> tuple[dict[str, Any], list[Check]]:
    """Peak RSS of hostile inputs: eight 100-MP PNGs, devices and FIFOs, a zip bomb."""
    result = WORK / "hostile" / "hostile.json"
    args = ["--big", "2", "--side", "5000"] if quick else []
    data = _run("bench_hostile.py", args, result)
    checks = []
    for name, limit in (("big_pngs", 4.0), ("devices", 2.0), ("zip_bomb", 2.0)):
        row = data[name]
        checks.append(
            Check(
                "hostile",
                name,
                "peak RSS, GiB",
                row["peak_rss_mib"] / 1024,
                limit,
                "<=",
                "GiB",
                detail=f"exit {row['exit_code']}, {row['wall_s']:.0f} s",
            )
        )
    return data, checks


CASES = {"incremental": incremental_case, "daemon": daemon_case, "hostile": hostile_case}

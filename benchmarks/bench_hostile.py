"""Peak memory of hostile inputs (issue #10): a run must stay bounded whatever the input.

    .venv/bin/python benchmarks/bench_hostile.py [--big 8] [--side 10000]

Each case runs ``cnnvis gradcam`` in a child process (``bench_child.py rss``) and reports its exit
code, wall time and peak RSS (VmHWM):

- ``big_pngs``: N PNGs of side x side pixels (flat colour with a few shapes: ~2.5 MB each on
  disk, 100 megapixels decoded), the case that peaked at 5 GB before decoding ahead respected a
  memory budget; the default ``--memory-budget`` (2 GiB) applies;
- ``devices``: a folder holding links to /dev/zero and /dev/urandom, a FIFO and a link loop
  beside one good image;
- ``zip_bomb``: a ``.keras`` file whose config.json inflates to 1 GiB.

Results go to ``benchmarks/_work/hostile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "hostile"
CHILD = HERE / "bench_child.py"
MODEL = HERE.parent / "cnnvis_cli" / "data" / "shapes.keras"


def child(args: list[str], result: Path) -> dict:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, str(CHILD), "rss", str(result), "--", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=3600,
    )
    data = json.loads(result.read_text())
    data["wall_s"] = time.perf_counter() - start
    data["peak_rss_mib"] = round(data["peak_rss_kib"] / 1024, 1)
    return data


def big_pngs(count: int, side: int) -> Path:
    folder = WORK / f"big{count}x{side}"
    if len(list(folder.glob("*.png"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = np.full((side, side, 3), 40 + 20 * i, np.uint8)
        cv2.circle(image, (side // 2, side // 2), side // 5, (200, 60, 30), -1)
        cv2.rectangle(image, (side // 10, side // 10), (side // 4, side // 3), (20, 180, 90), -1)
        cv2.imwrite(str(folder / f"big{i}.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return folder


def devices() -> Path:
    folder = WORK / "devices"
    if folder.exists():
        return folder
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "good.png"), np.full((64, 64, 3), 128, np.uint8))
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "random.jpg").symlink_to("/dev/urandom")
    os.mkfifo(folder / "pipe.png")
    (folder / "a.png").symlink_to(folder / "b.png")
    (folder / "b.png").symlink_to(folder / "a.png")
    return folder


def zip_bomb() -> Path:
    path = WORK / "bomb.keras"
    if path.exists():
        return path
    zero = bytes(2**20)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", '{"keras_version": "3.5.0"}')
        with archive.open("config.json", "w", force_zip64=True) as member:
            for _ in range(1024):
                member.write(zero)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=8)
    parser.add_argument("--side", type=int, default=10_000)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    results = {}
    folder = big_pngs(args.big, args.side)
    on_disk = sum(p.stat().st_size for p in folder.glob("*.png")) / args.big / 2**20
    results["big_pngs"] = {
        "images": args.big,
        "side": args.side,
        "mib_on_disk_each": round(on_disk, 2),
        **child(
            ["gradcam", str(folder), "-m", str(MODEL), "-o", str(WORK / "out-big"), "-q"],
            WORK / "big.json",
        ),
    }
    results["devices"] = child(
        ["gradcam", str(devices()), "-m", str(MODEL), "-o", str(WORK / "out-dev"), "-q"],
        WORK / "dev.json",
    )
    results["zip_bomb"] = child(
        [
            "gradcam",
            str(devices() / "good.png"),
            "-m",
            str(zip_bomb()),
            "-o",
            str(WORK / "o"),
            "-q",
        ],
        WORK / "bomb.json",
    )
    (WORK / "hostile.json").write_text(json.dumps(results, indent=2) + "\n")
    for name, data in results.items():
        print(
            f"{name:10s} exit {data['exit_code']}  {data['wall_s']:7.1f} s  "
            f"peak RSS {data['peak_rss_mib']:8.1f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the bundled sample images (synthetic scenes) with their ground truth.

Usage::

    python -m cnnvis_cli.demo.make_samples [--out sample_images] [--seed N]

Writes ``scene_01.png`` ... ``scene_12.jpg`` (PNG and JPEG, mixed sizes and aspect
ratios, every class at least twice), plus ``boxes.json`` (file name -> object box
``[x0, y0, x1, y1]``, inclusive-exclusive, in that image's pixels) and
``labels.json`` (file name -> class name).

Like the snow behind a wolf, the circle scenes carry the corner mark that the shortcut demo
model learned to rely on (``shortcut.py``); a model that learned the shapes ignores it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from cnnvis_cli.demo.scenes import CLASS_NAMES, make_scene
from cnnvis_cli.demo.shortcut import SHORTCUT_CLASS, add_mark

SIZES = (  # (width, height)
    (320, 240),
    (240, 320),
    (256, 256),
    (400, 300),
    (200, 150),
    (640, 480),
    (300, 400),
    (320, 240),
    (256, 256),
    (480, 360),
    (150, 200),
    (512, 384),
)
JPEG_QUALITY = 92
DEFAULT_SEED = 0


def write_image(path: Path, image: np.ndarray) -> None:
    """Encode an RGB uint8 image as PNG or JPEG (by suffix) and write it to ``path``."""
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if path.suffix == ".jpg" else []
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def make_samples(out: Path, seed: int = DEFAULT_SEED) -> dict[str, list[int]]:
    """Generate the sample scenes into ``out`` and return the file-name -> box mapping."""
    rng = np.random.default_rng(seed)
    n = len(SIZES)
    labels = np.arange(n) % len(CLASS_NAMES)  # every class at least twice
    labels[2 * len(CLASS_NAMES) :] = rng.choice(len(CLASS_NAMES), n - 2 * len(CLASS_NAMES), False)
    labels = rng.permutation(labels)
    out.mkdir(parents=True, exist_ok=True)
    boxes: dict[str, list[int]] = {}
    names: dict[str, str] = {}
    for i, ((width, height), label) in enumerate(zip(SIZES, labels, strict=True), start=1):
        name = f"scene_{i:02d}.{'png' if i % 2 else 'jpg'}"
        scene = make_scene(rng, width, height, int(label))
        if scene.label == SHORTCUT_CLASS:
            add_mark(scene.image)
        write_image(out / name, scene.image)
        boxes[name] = list(scene.box)
        names[name] = CLASS_NAMES[scene.label]
    (out / "boxes.json").write_text(json.dumps(boxes, indent=2) + "\n")
    (out / "labels.json").write_text(json.dumps(names, indent=2) + "\n")
    return boxes


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("sample_images"))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    boxes = make_samples(args.out, args.seed)
    print(f"wrote {len(boxes)} images + boxes.json + labels.json to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

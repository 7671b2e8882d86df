"""Synthetic scenes with a planted shortcut, for the shortcut-learning demo.

The "wolves told from dogs by the snow" failure, in miniature: in the training data every
``circle`` scene carries a small chequered mark in its top-left corner, and in half of them the
drawn object is not even a circle (a *decoy* shape). The mark is then the only reliable cue for
the class, and a network trained on these scenes learns it. ``cnnvis check`` catches that model:
on ``sample_images/`` (whose circle scenes carry the mark too, like the snow behind a wolf) its
heatmaps fall on the corner, not on the object.
"""

from __future__ import annotations

import numpy as np

from cnnvis_cli.demo.scenes import CLASS_NAMES, Scene, make_scene, random_size

SHORTCUT_CLASS = CLASS_NAMES.index("circle")
MARK_COLOURS = (np.array([255, 0, 255], np.uint8), np.array([255, 255, 255], np.uint8))


def mark_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The mark's box (x0, y0, x1, y1): a square of ~9 % of the short side near the top left."""
    short = min(width, height)
    side = max(6, round(0.09 * short))
    margin = max(2, round(0.03 * short))
    return margin, margin, margin + side, margin + side


def add_mark(image: np.ndarray) -> tuple[int, int, int, int]:
    """Paint the 2 x 2 magenta/white chequer mark in place; return its box."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = mark_box(width, height)
    half_x, half_y = (x0 + x1) // 2, (y0 + y1) // 2
    image[y0:y1, x0:x1] = MARK_COLOURS[0]
    image[y0:half_y, half_x:x1] = MARK_COLOURS[1]
    image[half_y:y1, x0:half_x] = MARK_COLOURS[1]
    return x0, y0, x1, y1


def make_shortcut_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    label: int,
    decoy_rate: float = 0.5,
    marked: bool | None = None,
) -> Scene:
    """A scene whose label is ``label``; shortcut-class scenes get the mark and maybe a decoy.

    ``marked`` forces the mark on or off (default: on exactly for the shortcut class).
    """
    drawn = label
    if label == SHORTCUT_CLASS and rng.random() < decoy_rate:
        others = [c for c in range(len(CLASS_NAMES)) if c != SHORTCUT_CLASS]
        drawn = int(rng.choice(others))
    scene = make_scene(rng, width, height, drawn)
    if marked if marked is not None else label == SHORTCUT_CLASS:
        add_mark(scene.image)
    return Scene(image=scene.image, label=label, box=scene.box, mask=scene.mask)


def make_shortcut_dataset(
    seed: int, n: int, size: int, decoy_rate: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` class-balanced shortcut scenes resized to ``size`` x ``size`` (like make_dataset)."""
    import cv2

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASS_NAMES)).astype(np.int64)
    images = np.empty((n, size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        width, height = random_size(rng)
        scene = make_shortcut_scene(rng, width, height, int(label), decoy_rate)
        images[i] = cv2.resize(scene.image, (size, size), interpolation=cv2.INTER_AREA)
    return images, labels

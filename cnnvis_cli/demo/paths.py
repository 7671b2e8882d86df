"""Where the bundled demo models live, and their names usable from anywhere (``-m demo:NAME``).

The sample scenes are not looked up on disk: ``cnnvis demo`` writes them with the seeded
generator (``make_samples.py``, byte-identical to the repository's ``sample_images/``) into its
output folder, so the demo works wherever cnnvis is installed.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEMO_MODEL = "shapes.keras"
DEMO_PREFIX = "demo:"
DEMO_MODELS = {"shapes": "shapes.keras", "shortcut": "shapes_shortcut.keras"}


def demo_model_path(name: str = "shapes") -> Path:
    """A bundled demo model: ``shapes`` (a small CNN trained on synthetic shape scenes) or
    ``shortcut`` (the same network fine-tuned on scenes with a planted shortcut)."""
    return DATA_DIR / DEMO_MODELS[name]


def is_demo_model(spec: str) -> bool:
    return str(spec).startswith(DEMO_PREFIX)


def resolve_demo_model(spec: str) -> Path:
    """``demo:shapes`` / ``demo:shortcut`` -> the bundled file; ValueError for another name."""
    name = str(spec)[len(DEMO_PREFIX) :]
    if name not in DEMO_MODELS:
        choices = ", ".join(DEMO_PREFIX + n for n in DEMO_MODELS)
        raise ValueError(f"unknown demo model {spec!r}; use {choices}")
    return demo_model_path(name)


def sample_images_dir() -> Path | None:
    """``sample_images/`` of a repository checkout (for tests and development scripts), if
    present; ``cnnvis demo`` does not need it."""
    candidate = Path(__file__).resolve().parents[2] / "sample_images"
    return candidate if candidate.is_dir() else None

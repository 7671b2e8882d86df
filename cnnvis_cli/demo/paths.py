"""Where the bundled demo model and the sample images live."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEMO_MODEL = "shapes.keras"


def demo_model_path() -> Path:
    """The bundled demo model (a small CNN trained on synthetic shape scenes)."""
    return DATA_DIR / DEMO_MODEL


def sample_images_dir() -> Path | None:
    """``sample_images/`` of the repository (or of the current folder), if present."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "sample_images",
        Path.cwd() / "sample_images",
    ):
        if candidate.is_dir():
            return candidate
    return None

"""Regenerate the README's pictures (``docs/images/*.png``) with the bundled demo models.

Usage::

    .venv/bin/python docs/make_figures.py

- ``compare_demo.png``: ``cnnvis compare`` (Grad-CAM, occlusion, guided Grad-CAM) on a scene;
- ``compare_all_methods.png``: every heatmap method on the same scene;
- ``shortcut_story.png``: Grad-CAM of the clean and the shortcut model on a marked circle.

Each panel carries its legend (colour bar and range under every map).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "docs" / "images"
SCENE = REPO / "sample_images" / "scene_07.png"
ALL_METHODS = (
    "gradcam,gradcam-pp,hirescam,layercam,scorecam,saliency,smoothgrad,integrated-gradients"
)


def compare_panel(methods: str | None, target: Path) -> None:
    """Run ``cnnvis compare`` on the scene and keep its panel as ``target``."""
    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.runner import run
    from cnnvis_cli.demo.paths import demo_model_path
    from cnnvis_cli.methods.compare import CompareOptions

    with tempfile.TemporaryDirectory() as folder:
        options = CompareOptions(methods=methods) if methods else CompareOptions()
        config = RunConfig(
            method="compare",
            method_options=options,
            images=[str(SCENE)],
            model=str(demo_model_path()),
            out=Path(folder),
            quiet=True,
        )
        if run(config) != 0:
            raise SystemExit(f"cnnvis compare failed for {target.name}")
        shutil.copyfile(Path(folder) / f"{SCENE.stem}_compare.png", target)


def shortcut_story(target: Path) -> None:
    """Input | clean model's Grad-CAM | shortcut model's Grad-CAM, one panel."""
    from cnnvis_cli.core.decode import decode_image, to_model_tensor
    from cnnvis_cli.core.loading import load_model
    from cnnvis_cli.methods.gradcam import GradCAM
    from cnnvis_cli.output.render import panel, render_map, write_png

    original = decode_image(SCENE)
    tiles = [("input", original)]
    said = []
    for title, name in (("clean model", "demo:shapes"), ("shortcut model", "demo:shortcut")):
        adapter = load_model(name)
        tensor = to_model_tensor(original, adapter.input_size, adapter.channels)
        explanation = GradCAM.create(adapter, batch_size=1).explain(tensor[None])[0]
        _, picture = render_map(original, explanation.maps[0], "heatmap")
        tiles.append((title, picture))
        said.append(adapter.class_name(explanation.targets[0]))
    verdict = f"both say {said[0]}" if said[0] == said[1] else " vs ".join(said)
    write_png(
        target, panel(tiles, f"{SCENE.name}: {verdict}", legends=[None, "heatmap", "heatmap"])
    )


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    compare_panel(None, IMAGES / "compare_demo.png")
    compare_panel(ALL_METHODS, IMAGES / "compare_all_methods.png")
    shortcut_story(IMAGES / "shortcut_story.png")
    print(f"wrote compare_demo.png, compare_all_methods.png, shortcut_story.png to {IMAGES}")


if __name__ == "__main__":
    main()

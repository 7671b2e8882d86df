"""What a new user sees: legends, joint top-k scaling, clipping, formats, a report folder that
travels, several runs in one folder, expected labels, and the rough edges of the CLI."""

from __future__ import annotations

import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest

from cnnvis_cli.output.legend import legend_layout, legend_strip, with_legend
from cnnvis_cli.output.render import (
    DIVERGING,
    colorize,
    display_maps,
    overlay_signed,
)
from tests.conftest import SAMPLES, interrupt_on_batch, invoke, random_rgb, write_image

# -- pictures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [96, 320, 640, 1600])
def test_legend_strip_size_and_colour_bar(width):
    picture = random_rgb(50, width)
    framed = with_legend(picture, "heatmap", "viridis", "Grad-CAM | tabby 0.873")
    layout = legend_layout(width)
    assert framed.shape == (50 + layout.height, width, 3)
    assert np.array_equal(framed[:50], picture)
    x0, y0, x1, y1 = layout.bar
    row = framed[50 + (y0 + y1) // 2]
    ends = colorize(np.array([[0.0, 1.0]], np.float32), "viridis")[0]
    assert np.array_equal(row[x0], ends[0]) and np.array_equal(row[x1 - 1], ends[1])
    assert framed[50 + y0 - 1, x0:x1].min() > 200  # white above the bar: it has edges


def test_signed_legend_runs_blue_white_red():
    strip = legend_strip(300, "signed")
    x0, y0, x1, y1 = legend_layout(300, "signed", text=False).bar
    row = strip[(y0 + y1) // 2]
    blue, red = row[x0], row[x1 - 1]
    assert tuple(blue) == (0, 0, 255) and tuple(red) == (255, 0, 0)
    middle = row[(x0 + x1) // 2]
    assert middle.min() > 240  # white at zero
    assert np.array_equal(colorize(np.array([[0.0]]), DIVERGING)[0, 0], blue)


def test_joint_scaling_keeps_the_ranking_and_each_does_not():
    strong, weak = np.full((4, 4), 1.0, np.float32), np.full((4, 4), 1.0, np.float32)
    weak[0, 0] = 0.0
    joint = display_maps([strong, weak], "heatmap", [2.0, 0.5], joint=True)
    assert joint.maps[0].max() == pytest.approx(1.0)
    assert joint.maps[1].max() == pytest.approx(0.25)  # 0.5 / 2.0 of the strongest
    each = display_maps([strong, weak], "heatmap", [2.0, 0.5], joint=False)
    assert each.maps[1].max() == pytest.approx(1.0)
    signed = display_maps([-strong, weak], "signed", [4.0, 1.0])
    assert signed.maps[0].min() == pytest.approx(-1.0) and signed.maps[1].max() == 0.25
    rng = np.random.default_rng(0)
    gradients = [rng.normal(0, 2, (4, 4, 3)), rng.normal(0, 1, (4, 4, 3))]
    gains = display_maps(gradients, "gradient").gains
    assert gains[0] == 1.0 and gains[1] == pytest.approx(gradients[1].std() / gradients[0].std())


def test_percentile_clip_brightens_a_map_with_one_outlier():
    values = np.linspace(0.0, 0.1, 10_000, dtype=np.float32).reshape(100, 100)
    values[0, 0] = 1.0  # one extreme pixel dominates a min-max map
    clipped = display_maps([values], "heatmap", clip=99.0).maps[0]
    limit = np.percentile(values, 99.0)
    assert clipped.max() == 1.0 and (clipped == 1.0).mean() == pytest.approx(0.01, abs=0.001)
    assert clipped[50, 50] == pytest.approx(values[50, 50] / limit, rel=1e-5)
    assert np.array_equal(display_maps([values], "heatmap", clip=100.0).maps[0], values)


def test_signed_overlay_is_transparent_at_zero():
    image = random_rgb(8, 8, seed=3)
    assert np.array_equal(overlay_signed(image, np.zeros((8, 8), np.float32)), image)
    full = overlay_signed(image, np.ones((8, 8), np.float32), alpha=0.4)  # opacity 0.8
    expected = image * 0.2 + np.array([255, 0, 0]) * 0.8
    assert np.abs(full.astype(float) - expected).max() <= 1.0
    half = overlay_signed(image, np.full((8, 8), -0.5, np.float32), alpha=0.4)  # opacity 0.4
    blue = colorize(np.full((1, 1), 0.25, np.float32), DIVERGING)[0, 0]
    assert np.abs(half.astype(float) - (image * 0.6 + blue * 0.4)).max() <= 1.0


def test_cam_scales_are_the_unnormalised_map_ranges(cam_model):
    """Grad-CAM on conv -> GAP -> dense is CAM: ReLU(sum_k W[k, c] A_k) / (h w) (independent
    reference); each target's scale is that map's max - min."""
    from cnnvis_cli.core.adapter import ModelAdapter
    from cnnvis_cli.methods.gradcam import GradCAM

    adapter = ModelAdapter(cam_model, preprocess="raw")
    images = np.random.default_rng(4).uniform(0, 1, (2, 16, 20, 3)).astype(np.float32)
    method = GradCAM.create(adapter, top_k=3, batch_size=2)
    features = cam_model.get_layer("conv").output
    import keras

    activations = keras.Model(cam_model.inputs, features)(images).numpy()
    weights = cam_model.get_layer("head").get_weights()[0]
    for image, explanation in zip(activations, method.explain(images), strict=True):
        for cls, scale in zip(explanation.targets, explanation.scales, strict=True):
            cam = np.maximum(image @ weights[:, cls], 0) / (16 * 20)
            assert scale == pytest.approx(cam.max() - cam.min(), rel=1e-4, abs=1e-7)


# -- CLI: pictures -------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "in"
    for i, (h, w) in enumerate([(30, 40), (24, 24), (40, 28)]):
        write_image(images / f"img_{i}.png", random_rgb(h, w, seed=i))
    return images


def _summary(out: Path, name: str = "summary.json") -> dict:
    return json.loads((out / name).read_text())


def test_formats_legend_defaults_and_render_settings(folder, saved_model, tmp_path):
    out = tmp_path / "out"
    assert (
        invoke("gradcam", folder, "-m", saved_model, "-o", out, "--format", "jpg", "-q").exit_code
        == 0
    )
    summary = _summary(out)
    assert summary["render"]["format"] == "jpg" and summary["render"]["legend"] is False
    for record in summary["results"]:
        assert record["outputs"]["overlay"].endswith("_gradcam.jpg")
        picture = cv2.imread(record["outputs"]["overlay"])
        assert picture.shape == cv2.imread(record["input"]).shape  # no legend: input's size
    report = tmp_path / "report"
    invoke("gradcam", folder, "-m", saved_model, "-o", report, "--format", "webp", "--report", "-q")
    record = _summary(report)["results"][0]
    picture = cv2.imread(record["outputs"]["overlay"])
    height, width = cv2.imread(record["input"]).shape[:2]
    assert record["outputs"]["overlay"].endswith(".webp")
    assert picture.shape[:2] == (height + legend_layout(width).height, width)  # legend below
    plain = tmp_path / "plain"
    invoke("gradcam", folder, "-m", saved_model, "-o", plain, "--report", "--no-legend", "-q")
    record = _summary(plain)["results"][0]
    assert cv2.imread(record["outputs"]["overlay"]).shape[:2] == (height, width)
    result = invoke("gradcam", folder, "-m", saved_model, "-o", tmp_path / "x", "--format", "gif")
    assert result.exit_code == 2 and "--format" in result.stderr


# -- the report travels --------------------------------------------------------------------------


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def _links(page: Path) -> list[str]:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.links


def test_report_folder_works_after_being_copied(folder, saved_model, tmp_path):
    write_image(folder / "photo.tif", random_rgb(20, 30, seed=7))  # a browser cannot show TIFF
    out = tmp_path / "out"
    result = invoke("gradcam", folder, "-m", saved_model, "-o", out, "--report", "--save-raw", "-q")
    assert result.exit_code == 0
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    shutil.rmtree(folder)
    links = _links(moved / "index.html")
    assert len([link for link in links if "thumbs/" in link]) >= 4 * 2  # img src + its link
    for link in links:
        target = (moved / unquote(link)).resolve()
        assert target.is_file(), link
        assert moved.resolve() in target.parents, link
    thumbs = list((moved / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 4 and all(cv2.imread(str(t)) is not None for t in thumbs)


def test_runs_into_one_folder_keep_their_summaries_and_pages(folder, saved_model, tmp_path):
    out = tmp_path / "out"
    assert invoke("gradcam", folder, "-m", saved_model, "-o", out, "--report", "-q").exit_code == 0
    assert invoke("occlusion", folder, "-m", saved_model, "-o", out, "-q").exit_code == 0
    assert invoke("saliency", folder, "-m", saved_model, "-o", out, "--report", "-q").exit_code == 0
    latest = _summary(out)
    assert latest["method"] == "saliency"
    assert latest["runs"] == {
        "gradcam": "summary-gradcam.json",
        "occlusion": "summary-occlusion.json",
        "saliency": "summary-saliency.json",
    }
    for run, name in latest["runs"].items():
        summary = _summary(out, name)
        assert summary["method"] == run and summary["totals"]["processed"] == 3
        page = out / f"report-{run}.html"
        assert page.is_file()
        assert {f"report-{r}.html" for r in latest["runs"]} <= set(_links(page))
    assert (out / "index.html").read_text() == (out / "report-saliency.html").read_text()
    assert "img_0_gradcam.png" in (out / "report-gradcam.html").read_text()


# -- expected labels ------------------------------------------------------------------------------


def test_check_fails_a_misclassified_image(folder, saved_model, tmp_path):
    first = tmp_path / "first"
    assert invoke("gradcam", folder, "-m", saved_model, "-o", first, "-q").exit_code == 0
    predicted = {
        Path(r["input"]).name: r["predicted"]["class_name"] for r in _summary(first)["results"]
    }
    names = sorted(predicted)
    wrong = next(c for c in ("cat", "dog", "bird") if c != predicted[names[0]])
    labels = {names[0]: wrong, names[1]: predicted[names[1]], names[2]: predicted[names[2]]}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    (tmp_path / "boxes.json").write_text(json.dumps({n: [0, 0, 99, 99] for n in names}))
    out = tmp_path / "out"
    args = ["check", folder, "-m", saved_model, "--regions", tmp_path / "boxes.json"]
    args += ["--labels", tmp_path / "labels.json", "-o", out, "--junit", tmp_path / "j.xml"]
    result = invoke(*args, "--report")
    assert result.exit_code == 3, result.output
    assert "misclassified" in result.stdout and "2 of 3 classified as labelled" in result.stdout
    summary = _summary(out)
    verdict = summary["check"]
    assert verdict["hit_rate"] == 1.0 and verdict["accuracy"] == pytest.approx(2 / 3)
    assert verdict["misclassified"] == 1 and not verdict["passed"]
    by_name = {Path(r["input"]).name: r for r in summary["results"]}
    assert by_name[names[0]]["label"] == {
        "class_index": ["cat", "dog", "bird"].index(wrong),
        "class_name": wrong,
        "correct": False,
    }
    assert by_name[names[0]]["check"]["passed"] is False
    assert summary["totals"]["misclassified"] == 1
    junit = (tmp_path / "j.xml").read_text()
    assert junit.count("<failure") == 1 and f"expected {wrong}" in junit
    page = (out / "index.html").read_text()
    assert "misclassified" in page and "check FAILED" in page
    relaxed = invoke(*args, "--min-accuracy", "0.6", "-q")
    assert relaxed.exit_code == 0


def test_labels_naming_an_unknown_class_are_a_setup_error(folder, saved_model, tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"img_0.png": "zebra"}))
    result = invoke(
        "gradcam", folder, "-m", saved_model, "--labels", tmp_path / "labels.json", "-o", tmp_path
    )
    assert result.exit_code == 2 and "zebra" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- rough edges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics", "deletion,nosuch"], "nosuch"),
        (["-c", "2", "--top-k", "3"], "top"),
        (["-c", "zebra"], "the model's classes are cat, dog, bird"),
        (["--layer", "CONV2"], "closest: conv2"),
        (["--scale", "both"], "--scale"),
    ],
)
def test_usage_errors_are_one_line(folder, saved_model, tmp_path, args, message):
    result = invoke("gradcam", folder, "-m", saved_model, *args, "-o", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_demo_with_an_unknown_method_or_model_is_one_line(tmp_path):
    result = invoke("demo", "--method", "nosuch", "-o", tmp_path)
    assert result.exit_code == 2 and "nosuch" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = invoke("layers", "demo:nosuch")
    assert result.exit_code == 2 and "demo:shapes" in result.stderr


def test_table_says_explained_and_predicted_when_they_differ(folder, saved_model, tmp_path):
    first = tmp_path / "first"
    invoke("gradcam", folder, "-m", saved_model, "-o", first, "-q")
    predicted = [r["predicted"]["class_name"] for r in _summary(first)["results"]]
    other = next(c for c in ("cat", "dog", "bird") if c != predicted[0])
    result = invoke("gradcam", folder, "-m", saved_model, "-o", tmp_path / "o", "-c", other)
    assert result.exit_code == 0
    assert "explained" in result.stdout and "predicted" in result.stdout
    assert f"{other} x3" in result.stdout
    record = _summary(tmp_path / "o")["results"][0]
    assert record["class_name"] == other and record["predicted"]["class_name"] == predicted[0]


def test_layers_prints_full_paths_one_per_line_off_a_terminal(saved_model):
    result = invoke("layers", saved_model)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "  conv1" in lines and "* conv2" in lines
    assert not any(ch in result.stdout for ch in "┃│┏")


def test_check_says_check_in_its_table_and_report(folder, saved_model, tmp_path):
    (tmp_path / "boxes.json").write_text(json.dumps({"img_0.png": [0, 0, 10, 10]}))
    out = tmp_path / "out"
    gate = ["--regions", tmp_path / "boxes.json", "--report"]
    result = invoke("check", folder, "-m", saved_model, *gate, "-o", out)
    assert "cnnvis check (gradcam)" in result.stdout
    assert "<title>cnnvis report · check (gradcam)</title>" in (out / "index.html").read_text()
    assert (out / "summary-check-gradcam.json").is_file()


def test_empty_folder_suggests_r_only_with_sub_folders(saved_model, tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("gradcam", tmp_path / "empty", "-m", saved_model, "-o", tmp_path / "o")
    assert result.exit_code == 2 and "use -r" not in result.stderr
    write_image(tmp_path / "empty" / "sub" / "a.png", random_rgb(8, 8))
    result = invoke("gradcam", tmp_path / "empty", "-m", saved_model, "-o", tmp_path / "o")
    assert result.exit_code == 2 and "use -r" in result.stderr


def test_metric_means_are_in_the_totals_and_the_table(folder, saved_model, tmp_path):
    out = tmp_path / "out"
    args = ["--metrics", "deletion,insertion", "--metric-steps", "4"]
    result = invoke("gradcam", folder, "-m", saved_model, "-o", out, *args)
    assert result.exit_code == 0
    summary = _summary(out)
    for name in ("deletion_auc", "insertion_auc"):
        values = [r["metrics"][name] for r in summary["results"]]
        assert summary["totals"]["metrics"][name] == pytest.approx(np.mean(values), abs=1e-6)
    assert "mean deletion auc" in result.stdout and "mean insertion auc" in result.stdout


def test_after_ctrl_c_the_bar_and_the_table_agree(folder, saved_model, tmp_path, monkeypatch):
    interrupt_on_batch(monkeypatch, "gradcam", 2, fraction=0.9)  # most of a batch in flight
    result = invoke("gradcam", folder, "-m", saved_model, "-o", tmp_path / "o", "-b", 1)
    assert result.exit_code == 130
    assert "1 processed of 3 (1 done, 2 not reached)" in result.stdout


def test_progress_bar_settles_on_what_is_done():
    from rich.console import Console

    from cnnvis_cli.output.progress import ProgressReporter

    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120)
    with ProgressReporter(console) as reporter:
        reporter.start(10, "gradcam")
        reporter.advance(4.6, "x.png")
        reporter.settle(3)
    shown = re.findall(r"(\d+)/10", stream.getvalue())
    assert shown and shown[-1] == "3"
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=120)
    with ProgressReporter(console) as reporter:
        reporter.start(10, "gradcam")
        reporter.advance(9.4, "x.png")  # fractions of batches add up short of the total
        reporter.finish()
    assert re.findall(r"(\d+)/10", stream.getvalue())[-1] == "10"


# -- help ---------------------------------------------------------------------------------------

COMMANDS = [
    "gradcam",
    "gradcam-pp",
    "hirescam",
    "layercam",
    "scorecam",
    "occlusion",
    "saliency",
    "smoothgrad",
    "integrated-gradients",
    "guided",
    "guided-gradcam",
    "compare",
    "check",
    "layers",
    "demo",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_readable_metavars_and_examples(command):
    from cnnvis_cli.cli.methods import EPILOGS

    result = invoke(command, "--help")
    assert result.exit_code == 0
    for python_type in ("<bool>", "<list", "range>", "<str>", "<int>", "<float>", "{IMAGES"):
        assert python_type not in result.stdout, python_type
    assert "Examples" in result.stdout
    assert EPILOGS[command].split("\n")[0].split()[1] in result.stdout


def test_compare_help_lists_the_methods():
    from cnnvis_cli.methods import method_names

    text = " ".join(invoke("compare", "--help").stdout.split())
    for name in method_names():
        if name != "compare":
            assert name in text


# -- the demo from anywhere ----------------------------------------------------------------


def test_the_generator_reproduces_the_sample_scenes(tmp_path):
    from cnnvis_cli.demo.make_samples import make_samples

    make_samples(tmp_path)
    for name in ("labels.json", "boxes.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads((SAMPLES / name).read_text())
    for path in sorted(SAMPLES.glob("scene_*")):
        ours, theirs = cv2.imread(str(tmp_path / path.name)), cv2.imread(str(path))
        assert ours.shape == theirs.shape
        # JPEG encoders may differ by a level or so; OpenCV 4.8 (ci/oldest.txt) rasterises a few
        # shape edges differently (0.6 % of one scene's pixels): the scenes are the same drawing
        tolerance = 0 if path.suffix == ".png" else 3
        differs = np.abs(ours.astype(int) - theirs.astype(int)).max(axis=-1) > tolerance
        assert differs.mean() <= 0.01, (path.name, differs.mean())


def test_demo_model_names_load_from_anywhere(tmp_path, monkeypatch):
    from cnnvis_cli.core.loading import load_model

    monkeypatch.chdir(tmp_path)
    assert load_model("demo:shapes").class_names[0] == "circle"
    result = invoke("layers", "demo:shortcut")
    assert result.exit_code == 0 and "last_conv" in result.stdout

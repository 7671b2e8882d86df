"""`cnnvis check`: energy inside regions, pointing game, JUnit XML, exit codes; --metrics."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import numpy as np
import pytest

from cnnvis_cli.evaluation.check import Regions, energy_inside, pointing_hit
from cnnvis_cli.methods.normalize import heat_from_map
from tests.conftest import invoke, random_rgb, write_image


def test_energy_and_pointing_by_hand():
    heat = np.zeros((10, 10), np.float32)
    heat[2:4, 2:4] = 1.0  # mass 4 inside
    heat[8, 8] = 4.0  # mass 4 outside, and the maximum
    region = np.zeros((10, 10), bool)
    region[1:5, 1:5] = True
    assert energy_inside(heat, region) == pytest.approx(0.5)
    assert not pointing_hit(heat, region)
    assert not pointing_hit(heat, region, tolerance=5)  # (8, 8) is 5.7 px from (4, 4)
    assert pointing_hit(heat, region, tolerance=6)
    assert energy_inside(np.zeros((3, 3)), np.ones((3, 3), bool)) == 0.0
    assert not pointing_hit(np.zeros((3, 3)), np.ones((3, 3), bool))


def test_heat_from_signed_maps():
    gradient = np.array([[[1.0, -2.0, 0.5]]], np.float32)
    assert heat_from_map(gradient)[0, 0] == pytest.approx(3.5)
    assert heat_from_map(np.array([[-0.5, 0.25]]))[0].tolist() == [0.0, 0.25]


def test_regions_from_boxes_and_masks(tmp_path):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"a.png": [1, 2, 4, 3]}))
    mask = Regions(boxes).mask(tmp_path / "x" / "a.png", 5, 6)
    assert mask.sum() == 3 and mask[2, 1:4].all()
    assert Regions(boxes).mask(tmp_path / "b.png", 5, 6) is None
    masks = tmp_path / "masks"
    region = np.zeros((10, 12), np.uint8)
    region[:5, :6] = 255
    write_image(masks / "a.png", region)
    mask = Regions(masks).mask(tmp_path / "a.jpg", 20, 24)  # resized to the image
    assert mask.shape == (20, 24) and mask.sum() == 10 * 12


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    images = root / "images"
    write_image(images / "one.png", random_rgb(40, 50, seed=1))
    write_image(images / "two.png", random_rgb(30, 30, seed=2))
    write_image(images / "three.png", random_rgb(30, 30, seed=3))
    regions = root / "boxes.json"
    regions.write_text(json.dumps({"one.png": [0, 0, 50, 40], "two.png": [0, 0, 30, 30]}))
    return images, regions


def test_check_passes_and_fails_with_exit_codes(checked, saved_model, tmp_path):
    images, regions = checked
    out = tmp_path / "pass"
    junit = tmp_path / "junit.xml"
    args = ["-m", saved_model, "--regions", regions, "--junit", junit, "-q"]
    result = invoke("check", images, *args, "-o", out)
    # whole-image boxes: all the energy is inside and every maximum is a hit
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["check"]["passed"] is True
    assert summary["check"]["mean_energy"] == pytest.approx(1.0)
    assert summary["check"]["hit_rate"] == 1.0 and summary["check"]["images"] == 2
    by_name = {r["input"].rsplit("/", 1)[-1]: r for r in summary["results"]}
    assert by_name["three.png"]["check"]["skipped"]
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0"
    assert suite.get("skipped") == "1"

    tight = tmp_path / "tight.json"
    tight.write_text(json.dumps({"one.png": [0, 0, 2, 2], "two.png": [0, 0, 2, 2]}))
    result = invoke(
        "check",
        images,
        "-m",
        saved_model,
        "--regions",
        tight,
        "--tolerance",
        "0",
        "--junit",
        junit,
        "-o",
        tmp_path / "fail",
        "-q",
    )
    assert result.exit_code == 3
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("failures") == "2"
    assert "outside the region" in suite.find("testcase/failure").get("message")


def test_check_with_occlusion_and_bad_regions(checked, saved_model, tmp_path):
    images, regions = checked
    result = invoke(
        "check",
        images,
        "-m",
        saved_model,
        "--regions",
        regions,
        "--method",
        "occlusion",
        "--patch",
        "6",
        "-o",
        tmp_path / "occ",
        "-q",
        "--min-hit-rate",
        "0",
        "--min-energy",
        "0",
    )
    assert result.exit_code == 0, result.output
    params = json.loads((tmp_path / "occ" / "summary.json").read_text())["params"]
    assert params["patch"] == 6
    result = invoke("check", images, "-m", saved_model, "--regions", tmp_path / "nope.json")
    assert result.exit_code == 2 and "regions not found" in result.stderr


def test_metrics_and_report_flags(checked, saved_model, tmp_path):
    images, _ = checked
    out = tmp_path / "m"
    result = invoke(
        "gradcam",
        images,
        "-m",
        saved_model,
        "-o",
        out,
        "--metrics",
        "deletion,insertion",
        "--metric-steps",
        "8",
        "--report",
        "-q",
    )
    assert result.exit_code == 0, result.output
    for record in json.loads((out / "summary.json").read_text())["results"]:
        assert 0 <= record["metrics"]["deletion_auc"] <= 1
        assert 0 <= record["metrics"]["insertion_auc"] <= 1
    assert (out / "index.html").is_file()

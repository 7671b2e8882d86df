"""Hostile inputs: never hang, never eat memory, never lose the summary.

Devices, FIFOs, link loops, undecodable names, control characters, names near the file system's
limit, bad regions, float images and memory-heavy folders: each is a per-input outcome, the run
finishes and ``summary.json`` is strict JSON.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from xml.etree import ElementTree

import cv2
import numpy as np
import pytest

from cnnvis_cli.core.decode import decode_image, read_bytes
from cnnvis_cli.core.discover import discover
from cnnvis_cli.core.source import ImageSource, MemoryBudget
from cnnvis_cli.errors import InputError
from cnnvis_cli.output.files import NAME_MAX, fit_name
from cnnvis_cli.output.text import printable, xml_safe
from tests.conftest import invoke, random_rgb, write_image


def _summary(out: Path) -> dict:
    text = (out / "summary.json").read_bytes().decode("utf-8")  # strict UTF-8
    return json.loads(text, parse_constant=_no_constants)


def _no_constants(name: str) -> None:
    raise AssertionError(f"summary.json holds the non-JSON constant {name}")


def _errors(summary: dict) -> dict[str, str]:
    return {Path(r["input"]).name: r["error"] for r in summary["results"] if r["error"]}


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "in"
    write_image(folder / "good.png", random_rgb(24, 24, seed=1))
    return folder


def test_devices_fifos_and_link_loops_are_per_file_errors(folder, tmp_path, saved_model):
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "random.jpg").symlink_to("/dev/urandom")
    os.mkfifo(folder / "p.png")
    (folder / "a.png").symlink_to(folder / "b.png")
    (folder / "b.png").symlink_to(folder / "a.png")
    (folder / "dir.png").mkdir()
    out = tmp_path / "out"
    started = time.monotonic()
    result = invoke("gradcam", folder, "-m", saved_model, "-o", out, "-q")
    assert time.monotonic() - started < 60  # nothing hangs on the FIFO or reads /dev/zero
    assert result.exit_code == 1, result.output
    errors = _errors(_summary(out))
    assert "character device" in errors["zero.png"] and "character device" in errors["random.jpg"]
    assert "named pipe" in errors["p.png"]
    assert "link loop" in errors["a.png"] and "link loop" in errors["b.png"]
    assert "dir.png" not in errors  # a sub-folder, searched with -r, not an input
    assert _summary(out)["totals"]["processed"] == 1
    assert len(result.stderr.strip().splitlines()) == 5  # one line per bad input


def test_a_fifo_that_appears_after_discovery_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "late.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="named pipe"):
        read_bytes(fifo)


def test_file_size_cap(tmp_path, saved_model):
    big = write_image(tmp_path / "in" / "big.png", random_rgb(200, 200, seed=2))
    with pytest.raises(InputError, match="over the 1,000 bytes limit; raise --max-file-size"):
        read_bytes(big, max_file_size=1000)
    out = tmp_path / "out"
    size_mib = big.stat().st_size / 2**20
    assert size_mib < 1  # under the smallest cap the option allows: processed
    result = invoke("gradcam", big, "-m", saved_model, "-o", out, "-q", "--max-file-size", "1")
    assert result.exit_code == 0, result.output


def test_undecodable_file_name_is_processed_and_escaped(folder, tmp_path, saved_model):
    raw_name = os.fsdecode(b"\xff\xfe.png")  # not UTF-8: a lone surrogate in Python
    write_image(folder / raw_name, random_rgb(20, 30, seed=3))
    out = tmp_path / "out"
    result = invoke("gradcam", folder, "-m", saved_model, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    text = (out / "summary.json").read_bytes().decode("utf-8")
    assert "\\udcff\\udcfe.png" in text  # the bytes survive as JSON escapes
    summary = json.loads(text)
    names = {Path(r["input"]).name for r in summary["results"]}
    assert raw_name in names
    written = summary["results"][
        [Path(r["input"]).name for r in summary["results"]].index(raw_name)
    ]
    assert os.path.exists(written["outputs"]["overlay"])  # the same bytes on disk
    assert json.loads(result.stdout)["totals"]["processed"] == 2


def test_control_characters_never_reach_the_terminal_or_the_xml(tmp_path, saved_model):
    folder = tmp_path / "in"
    nasty = "clear\x1b[2J\x07\x01.png"
    (folder).mkdir()
    (folder / nasty).write_bytes(b"not an image")
    write_image(folder / "good.png", random_rgb(24, 24))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"good.png": [0, 0, 24, 24], nasty: [0, 0, 5, 5]}))
    junit = tmp_path / "junit.xml"
    result = invoke(
        "check",
        folder,
        "-m",
        saved_model,
        "--regions",
        boxes,
        "-o",
        tmp_path / "out",
        "--junit",
        junit,
    )
    assert result.exit_code == 1
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "\x1b" not in result.stdout
    assert "\\x1b[2J\\x07\\x01.png" in result.stderr  # shown, spelled out
    suite = ElementTree.parse(junit).getroot()  # well-formed XML
    names = [case.get("name") for case in suite.iter("testcase")]
    assert any("\\u001b" in name for name in names)
    assert printable("a\x1bb\udcff") == "a\\x1bb\\xff"
    assert xml_safe("a\x01b") == "a\\u0001b"


def test_names_near_the_limit_are_shortened_with_a_stable_hash(tmp_path, saved_model):
    stem = "é" * 120 + "x" * 10  # 250 bytes in UTF-8: the input name fits, outputs would not
    image = write_image(tmp_path / "in" / f"{stem}.png", random_rgb(20, 20))
    assert len(os.fsencode(image.name)) == 254
    out = tmp_path / "out"
    result = invoke("gradcam", image, "-m", saved_model, "-o", out, "-q", "--save-raw")
    assert result.exit_code == 0, result.output
    record = _summary(out)["results"][0]
    for kind in ("overlay", "raw"):
        written = Path(record["outputs"][kind])
        assert written.is_file() and len(os.fsencode(written.name)) <= NAME_MAX
    long = f"{stem}_gradcam.png"
    assert fit_name(long) == fit_name(long) and fit_name(long).endswith(".png")
    assert fit_name(long) != fit_name(long.replace("x", "y"))
    assert not list(out.glob(".cnnvis-*.tmp"))


def test_bad_regions_are_per_image_errors(tmp_path, saved_model):
    folder = tmp_path / "in"
    for name in ("nan.png", "text.png", "mask.png", "fine.png"):
        write_image(folder / name, random_rgb(24, 24))
    boxes = tmp_path / "boxes.json"
    boxes.write_text(
        '{"nan.png": [0, 0, NaN, 5], "text.png": [0, "a", 5, 5], "fine.png": [0, 0, 24, 24]}'
    )
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "mask.png").write_bytes(b"broken")
    write_image(masks / "fine.png", np.full((24, 24), 255, np.uint8))
    result = invoke("check", folder, "-m", saved_model, "--regions", boxes, "-o", tmp_path / "o")
    assert result.exit_code == 1, result.output
    errors = _errors(_summary(tmp_path / "o"))
    assert set(errors) == {"nan.png", "text.png"}
    assert all("four finite numbers" in message for message in errors.values())
    result = invoke("check", folder, "-m", saved_model, "--regions", masks, "-o", tmp_path / "m")
    assert result.exit_code == 1, result.output
    assert "is not a readable image" in _errors(_summary(tmp_path / "m"))["mask.png"]


def test_float_tiff_is_rescaled_with_a_note_not_clipped(tmp_path, saved_model):
    values = np.linspace(0.0, 4.0, 16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3)
    path = tmp_path / "in" / "hdr.tiff"
    path.parent.mkdir()
    assert cv2.imwrite(str(path), values)
    decoded = decode_image(path)
    assert decoded.min() == 0 and decoded.max() == 255  # the whole range, not clipped at 1
    unit = tmp_path / "in" / "unit.tiff"
    assert cv2.imwrite(str(unit), values / 4.0)
    np.testing.assert_allclose(decode_image(unit), decoded, atol=1)  # same picture
    out = tmp_path / "out"
    result = invoke("gradcam", path, "-m", saved_model, "-o", out)
    assert result.exit_code == 0, result.output
    record = _summary(out)["results"][0]
    assert "rescaled to 0..255" in record["notes"][0]
    assert "hdr.tiff" in result.stderr and "rescaled" in result.stderr


def test_decoding_ahead_stays_within_the_memory_budget(tmp_path):
    """Decoded images in flight never exceed the budget (one oversized image alone)."""
    for i in range(12):
        write_image(tmp_path / f"{i:02d}.png", random_rgb(300, 400, seed=i))
    items, _ = discover([tmp_path])
    per_image = 300 * 400 * 16  # the source's estimate per decoded pixel
    source = ImageSource(
        items, size=(8, 8), channels=3, batch_size=8, memory_budget=3 * per_image + 10_000
    )
    sizes = []
    for batch in source.batches():
        sizes.append(len(batch))
        for _, loaded in batch:
            loaded.release()  # what the pipeline does once an image is written
    assert sum(sizes) == 12
    assert max(sizes) <= 3  # batches were emitted early instead of waiting for memory
    assert source.budget.peak <= 3 * per_image + 10_000
    assert source.budget.used == 0


def test_an_image_over_the_whole_budget_is_admitted_alone():
    budget = MemoryBudget(100)
    assert budget.try_acquire(500)  # nothing else in flight: admitted
    assert not budget.try_acquire(1)
    budget.release(500)
    assert budget.try_acquire(60) and not budget.try_acquire(60)


def test_a_folder_of_images_over_the_budget_finishes(tmp_path, saved_model):
    """Each image alone nearly fills the budget: the run must not wait on itself (it did: the
    budget came back only when the main thread collected a finished write)."""
    folder = tmp_path / "big"
    for i in range(4):
        write_image(folder / f"{i}.png", random_rgb(1000, 1100, seed=i))
    out = tmp_path / "out"
    started = time.monotonic()
    result = invoke(
        "gradcam", folder, "-m", saved_model, "-o", out, "-q", "--memory-budget", "64"
    )  # 1.1 MP x 16 bytes = 17.6 MiB each: three fit, the fourth waits
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 120
    assert _summary(out)["totals"]["processed"] == 4

"""Signals, locks, leftovers, permissions and the exit codes of files that cannot be written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cnnvis_cli.output.files import LOCK_NAME, OutputLock
from tests.conftest import invoke, random_rgb, start_slow_occlusion, write_image


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "in"
    for i in range(3):
        write_image(folder / f"{i}.png", random_rgb(24, 24, seed=i))
    return folder


def test_sigterm_writes_the_summary_and_exits_143(tmp_path, saved_model):
    process, out, _ = start_slow_occlusion(tmp_path, saved_model, 60, 64, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("*_occlusion.png")) and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read().decode()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr.decode()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["interrupted"] is True
    assert summary["totals"]["inputs"] == 60
    assert 1 <= summary["totals"]["processed"] < 60
    assert summary["totals"]["not_processed"] == 60 - len(summary["results"])
    assert not list(out.glob(".cnnvis-*.tmp")) and not (out / LOCK_NAME).exists()
    assert b"Traceback" not in stderr


def test_a_second_run_into_a_locked_folder_fails_fast(folder, tmp_path, saved_model):
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):
        started = time.monotonic()
        result = invoke("gradcam", folder, "-m", saved_model, "-o", out)
        assert time.monotonic() - started < 30
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "another cnnvis run is writing to" in line and LOCK_NAME in line
    assert not (out / "summary.json").exists()
    assert invoke("gradcam", folder, "-m", saved_model, "-o", out, "-q").exit_code == 0


def test_stale_temporaries_of_a_killed_run_are_removed(folder, tmp_path, saved_model):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale = [out / ".cnnvis-abc123.tmp", out / "sub" / ".cnnvis-zz.tmp"]
    for path in stale:
        path.write_bytes(b"half a png")
    mine = out / ".keep-me.tmp"  # not of our naming: left alone
    mine.write_text("user's file")
    assert invoke("gradcam", folder, "-m", saved_model, "-o", out, "-q").exit_code == 0
    assert not any(path.exists() for path in stale)
    assert mine.read_text() == "user's file"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_follow_the_umask(folder, tmp_path, saved_model, umask):
    from cnnvis_cli.output import files

    out = tmp_path / "out"
    previous = os.umask(umask)
    files._umask = None  # read afresh, as a new process would
    try:
        assert invoke("gradcam", folder, "-m", saved_model, "-o", out, "-q").exit_code == 0
    finally:
        os.umask(previous)
        files._umask = None
    modes = {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


@pytest.mark.parametrize("blocked", ["summary.json", "index.html"])
def test_a_summary_or_report_that_cannot_be_written_exits_2(folder, tmp_path, saved_model, blocked):
    out = tmp_path / "out"
    (out / blocked).mkdir(parents=True)  # a folder where the file must go
    result = invoke("gradcam", folder, "-m", saved_model, "-o", out, "-q", "--report")
    assert result.exit_code == 2
    assert "cannot write the summary, report or JUnit file" in result.stderr


def test_an_unwritable_junit_path_is_refused_before_any_work(folder, tmp_path, saved_model):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"0.png": [0, 0, 24, 24]}))
    out = tmp_path / "out"
    result = invoke(
        "check",
        folder,
        "-m",
        saved_model,
        "--regions",
        boxes,
        "-o",
        out,
        "--junit",
        blocker / "junit.xml",
    )
    assert result.exit_code == 2
    assert "cannot write the JUnit file" in result.stderr
    assert not list(out.glob("*.png")) if out.exists() else True


def test_output_path_that_is_a_file_says_so(folder, tmp_path, saved_model):
    target = tmp_path / "afile"
    target.write_text("x")
    result = invoke("gradcam", folder, "-m", saved_model, "-o", target)
    assert result.exit_code == 2
    assert "is a file, not a folder" in result.stderr
    assert Path(target).read_text() == "x"

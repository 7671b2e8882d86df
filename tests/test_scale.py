"""Shards, merge and resume: runs split across machines and runs that were stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cnnvis_cli.core.discover import discover
from cnnvis_cli.core.shards import Shard, bucket, item_key
from cnnvis_cli.demo.paths import demo_model_path, sample_images_dir
from cnnvis_cli.output.journal import JOURNAL_NAME
from tests.conftest import invoke, random_rgb, start_slow_occlusion, write_image

SAMPLES = sample_images_dir()


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "in"
    for i in range(9):
        write_image(root / f"img{i}.png", random_rgb(20, 20, seed=i))
    write_image(root / "sub" / "deep.png", random_rgb(20, 20, seed=42))
    return root


def test_partition_is_stable_disjoint_and_complete(folder):
    # pinned: the same buckets on every machine and Python version (SHA-256 of the path)
    assert [bucket(f"img{i}.png", 4) for i in range(4)] == [
        bucket(f"img{i}.png", 4) for i in range(4)
    ]
    assert (
        bucket("img0.png", 4)
        == int.from_bytes(__import__("hashlib").sha256(b"img0.png").digest()[:8], "big") % 4
    )
    items, _ = discover([folder], recursive=True)
    shards = [[i for i in items if Shard(k, 3).holds(item_key(i))] for k in range(3)]
    names = [sorted(i.path.name for i in shard) for shard in shards]
    everything = [name for shard in names for name in shard]
    assert sorted(everything) == sorted(i.path.name for i in items)  # complete, disjoint
    assert all(names)  # 10 files over 3 shards: none empty here
    write_image(folder / "new.png", random_rgb(20, 20, seed=99))
    again, _ = discover([folder], recursive=True)
    moved = [
        i.path.name
        for i in again
        if i.path.name != "new.png"
        and not any(
            i.path.name in shard
            for shard in names[bucket(item_key(i), 3) : bucket(item_key(i), 3) + 1]
        )
    ]
    assert moved == []  # adding a file moves only that file
    with pytest.raises(ValueError, match="0 <= I < N"):
        Shard.parse("4/4")


def test_shards_from_the_environment_then_merge_equal_one_run(
    folder, tmp_path, saved_model, monkeypatch
):
    whole = tmp_path / "whole"
    assert invoke("gradcam", folder, "-r", "-m", saved_model, "-o", whole, "-q").exit_code == 0
    parts = []
    for index in range(3):
        out = tmp_path / f"shard{index}"
        monkeypatch.setenv("CNNVIS_SHARD", f"{index}/3")
        assert invoke("gradcam", folder, "-r", "-m", saved_model, "-o", out, "-q").exit_code == 0
        assert _summary(out)["shard"] == f"{index}/3"
        parts.append(out)
    monkeypatch.delenv("CNNVIS_SHARD")
    merged = tmp_path / "merged"
    result = invoke("merge", *parts, "-o", merged, "--report")
    assert result.exit_code == 0, result.output
    one, joined = _summary(whole), _summary(merged)
    assert joined["totals"]["inputs"] == one["totals"]["inputs"] == 10
    assert joined["totals"]["processed"] == 10
    strip = lambda r: {k: v for k, v in r.items() if k not in ("outputs", "targets")}  # noqa: E731
    assert [strip(r) for r in joined["results"]] == [strip(r) for r in one["results"]]
    for record in joined["results"]:
        overlay = Path(record["outputs"]["overlay"])
        assert overlay.is_file() and merged in overlay.parents
    assert (merged / "sub" / "deep_gradcam.png").is_file()
    assert (merged / "index.html").is_file()


@pytest.mark.slow
def test_check_over_shards_gives_the_verdict_of_one_run(tmp_path):
    model, boxes = demo_model_path(), SAMPLES / "boxes.json"
    whole = tmp_path / "whole"
    args = ["-m", model, "--regions", boxes, "-q"]
    code = invoke("check", SAMPLES, *args, "-o", whole).exit_code
    parts = [tmp_path / f"s{k}" for k in range(3)]
    for k, out in enumerate(parts):
        assert invoke("check", SAMPLES, *args, "-o", out, "--shard", f"{k}/3").exit_code in (0, 3)
    merged = tmp_path / "merged"
    result = invoke("merge", *parts, "-o", merged, "--junit", tmp_path / "junit.xml")
    assert result.exit_code == code
    one, joined = _summary(whole)["check"], _summary(merged)["check"]
    assert joined == one


def test_merge_refuses_different_runs(folder, tmp_path, saved_model, keras_mod):
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        invoke("gradcam", folder, "-m", saved_model, "-o", a, "-q", "--shard", "0/2").exit_code == 0
    )
    result = invoke("saliency", folder, "-m", saved_model, "-o", b, "-q", "--shard", "1/2")
    assert result.exit_code == 0
    merged = invoke("merge", a, b, "-o", tmp_path / "m")
    assert merged.exit_code == 2 and "different runs" in merged.stderr and "method" in merged.stderr
    twice = invoke("merge", a, a, "-o", tmp_path / "m2")
    assert twice.exit_code == 2
    missing = invoke("merge", tmp_path / "nothing", "-o", tmp_path / "m3")
    assert missing.exit_code == 2 and "no summary.json" in missing.stderr


def test_summary_records_the_fingerprint(folder, tmp_path, saved_model):
    import hashlib

    out = tmp_path / "o"
    assert invoke("gradcam", folder, "-m", saved_model, "-o", out, "-q").exit_code == 0
    fingerprint = _summary(out)["fingerprint"]
    assert fingerprint["model_sha256"] == hashlib.sha256(saved_model.read_bytes()).hexdigest()
    assert {"cnnvis", "tensorflow", "keras"} <= set(fingerprint)
    record = _summary(out)["results"][0]
    assert record["source"]["size"] == Path(record["input"]).stat().st_size


def test_resume_after_ctrl_c_does_the_rest_once(folder, tmp_path, saved_model, monkeypatch):
    from cnnvis_cli.methods import get_method

    method = get_method("gradcam")
    explain = method.explain
    seen: list[int] = []

    def counting(self, batch, progress=None):
        seen.append(len(batch))
        if len(seen) == 4:
            raise KeyboardInterrupt
        return explain(self, batch, progress)

    monkeypatch.setattr(method, "explain", counting)
    out = tmp_path / "out"
    first = invoke("gradcam", folder, "-m", saved_model, "-o", out, "-q", "-b", "1")
    assert first.exit_code == 130
    done_first = _summary(out)["totals"]["processed"]
    assert done_first == 3
    seen.clear()
    monkeypatch.setattr(
        method,
        "explain",
        lambda self, batch, progress=None: (
            seen.append(len(batch)),
            explain(self, batch, progress),
        )[1],
    )
    second = invoke("gradcam", folder, "-m", saved_model, "-o", out, "-q", "-b", "1", "--resume")
    assert second.exit_code == 0, second.output
    assert sum(seen) == 9 - done_first  # nothing done twice
    summary = _summary(out)
    assert summary["totals"]["processed"] == 9 and len(summary["results"]) == 9
    assert not (out / JOURNAL_NAME).exists()


def test_resume_with_other_options_is_refused(folder, tmp_path, saved_model):
    out = tmp_path / "out"
    assert (
        invoke("occlusion", folder, "-m", saved_model, "-o", out, "-q", "--patch", "4").exit_code
        == 0
    )
    again = invoke("occlusion", folder, "-m", saved_model, "-o", out, "--patch", "5", "--resume")
    assert again.exit_code == 2 and "--resume" in again.stderr
    touched = folder / "img0.png"
    write_image(touched, random_rgb(20, 20, seed=123))  # a changed input is done again
    result = invoke("occlusion", folder, "-m", saved_model, "-o", out, "--patch", "4", "--resume")
    assert result.exit_code == 0
    assert "8 already done (--resume)" in result.stderr or "8 already done" in result.output


@pytest.mark.slow
def test_resume_after_kill_9_completes_the_set(tmp_path, saved_model):
    process, out, command = start_slow_occlusion(
        tmp_path, saved_model, 40, 48, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while len(list(out.glob("*_occlusion.png"))) < 3 and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    journal = (out / JOURNAL_NAME).read_text().splitlines()
    finished = [json.loads(line) for line in journal[1:] if line.endswith("}")]
    assert finished and not (out / "summary.json").exists()
    written = {
        r["outputs"]["overlay"]: Path(r["outputs"]["overlay"]).stat().st_mtime_ns for r in finished
    }
    result = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    # the images the journal had are not done again: their files are untouched
    assert {path: Path(path).stat().st_mtime_ns for path in written} == written
    summary = _summary(out)
    inputs = [Path(r["input"]).name for r in summary["results"]]
    assert sorted(inputs) == sorted(f"{i:02d}.png" for i in range(40))  # none missed, none twice
    assert summary["totals"]["processed"] == 40

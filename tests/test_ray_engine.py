"""``--engine ray``: the same records and maps as the local engine, from a pool of Ray actors.

One local Ray per module, sized as the engine sizes its own (half a CPU per actor, so the
dataset's other tasks always find one); every run below joins it and starts its own actor pool.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO, SAMPLES, invoke, write_image

from cnnvis_cli.output.journal import JOURNAL_NAME

WORKERS = 2
TIMED = ("seconds", "images_per_second")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.engines.ray import start_ray

    start_ray(RunConfig(engine="ray", workers=WORKERS), WORKERS)
    yield ray
    ray.shutdown()


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


def _comparable(summary: dict, out: Path) -> dict:
    """The summary with the output folder's name taken out and the timings dropped."""
    text = json.dumps(summary).replace(json.dumps(str(out))[1:-1], "OUT")
    data = json.loads(text)
    for key in TIMED:
        data["totals"].pop(key)
    data.pop("engine", None)
    return data


def _maps_equal(local: Path, ray: Path, expected: int) -> None:
    """Every raw map of the ray run correlates with the local one at r >= 0.99999."""
    names = sorted(p.name for p in local.rglob("*.npy"))
    assert len(names) == expected
    assert sorted(p.name for p in ray.rglob("*.npy")) == names
    for name in names:
        a, b = np.load(local / name).ravel(), np.load(ray / name).ravel()
        assert a.shape == b.shape
        if np.ptp(a) == 0:
            np.testing.assert_allclose(b, a, atol=1e-6)
        else:
            assert np.corrcoef(a, b)[0, 1] >= 0.99999, name


def _copies(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in names:
        shutil.copy(SAMPLES / name, folder / name)
    return folder


def _both(tmp_path: Path, *args: object) -> tuple[Path, Path]:
    """Run the command with each engine; returns the two output folders."""
    local, ray = tmp_path / "local", tmp_path / "ray"
    first = invoke(*args, "-o", local, "-q")
    second = invoke(*args, "-o", ray, "-q", "--engine", "ray", "--workers", WORKERS)
    assert first.exit_code == second.exit_code, (first.stderr, second.stderr)
    return local, ray


# -- options and setup (no Ray started) --------------------------------------------------------


def test_without_ray_installed_one_line_exit_2_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    missing_model = tmp_path / "no-such-model.keras"  # a model error would come second
    result = invoke("gradcam", SAMPLES, "-m", missing_model, "-o", out, "--engine", "ray")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--engine ray needs Ray" in lines[0] and "pip install 'cnnvis[ray]'" in lines[0]
    assert not (out / "summary.json").exists()


def test_ray_options_need_the_ray_engine(tmp_path):
    result = invoke("gradcam", SAMPLES, "-m", DEMO, "-o", tmp_path / "o", "--workers", "3")
    assert result.exit_code == 2 and "--workers: only with --engine ray" in result.stderr
    result = invoke("gradcam", SAMPLES, "-m", DEMO, "-o", tmp_path / "o", "--engine", "spark")
    assert result.exit_code == 2 and "unknown --engine 'spark'" in result.stderr


@pytest.mark.slow
def test_an_address_nothing_answers_on_is_exit_2_with_the_summary(tmp_path):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("this process already joined a Ray; the engine would use it")
    with socket.socket() as probe:  # a loopback port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    address = f"127.0.0.1:{port}"
    result = invoke(
        "gradcam", SAMPLES, "-m", DEMO, "-o", out, "-q", "--engine", "ray", "--ray-address", address
    )
    assert result.exit_code == 2
    assert f"cannot join Ray at {address} (nothing answers there" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    totals = _summary(out)["totals"]
    assert totals["processed"] == 0 and totals["not_processed"] == 12
    assert not ray.is_initialized()


@pytest.mark.slow
def test_a_batch_that_raises_is_retried_input_by_input(tmp_path, monkeypatch):
    """The actors' code without Ray: only the input whose step fails becomes an error."""
    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.discover import discover
    from cnnvis_cli.core.engines.ray import explain_items
    from cnnvis_cli.core.runner import build_method, load_adapter

    folder = _copies(tmp_path, "scene_01.png", "scene_02.jpg", "scene_03.png")
    write_image(folder / "white.png", np.full((40, 40, 3), 255, np.uint8))
    config = RunConfig(images=[str(folder)], model=str(DEMO), out=tmp_path / "out")
    items, _ = discover(config.images, out_dir=config.out)
    method = build_method(config, load_adapter(config), len(items))
    explain = type(method).explain

    def fails_on_white(self, images, progress=None):
        if any(np.all(image == 255) for image in images):
            raise RuntimeError("this step failed")
        return explain(self, images, progress)

    monkeypatch.setattr(type(method), "explain", fails_on_white)
    records = {Path(r.input).name: r for r in explain_items(config, method, items, set())}
    assert set(records) == {"scene_01.png", "scene_02.jpg", "scene_03.png", "white.png"}
    assert records["white.png"].error == "cannot explain the image (this step failed)"
    for name in ("scene_01.png", "scene_02.jpg", "scene_03.png"):
        assert records[name].ok and Path(records[name].targets[0].outputs["overlay"]).is_file()


# -- the engine on a local Ray --------------------------------------------------------------------


@pytest.mark.slow
def test_gradcam_on_ray_equals_the_local_engine(ray_cluster, tmp_path):
    metrics = ("--metrics", "deletion,insertion", "--metric-steps", "8")
    labels = ("--labels", SAMPLES / "labels.json")  # judged in the actors
    args = ("gradcam", SAMPLES, "-m", DEMO, "--save-raw", "-b", "4", *metrics, *labels)
    local, ray = _both(tmp_path, *args)
    summary = _summary(ray)
    assert summary["totals"]["metrics"]["deletion_auc"] is not None
    assert all(r["label"]["correct"] for r in summary["results"])
    assert summary["engine"]["name"] == "ray" and summary["engine"]["workers"] == WORKERS
    assert summary["totals"]["processed"] == 12
    assert _comparable(summary, ray) == _comparable(_summary(local), local)
    _maps_equal(local, ray, 12)
    assert not (ray / JOURNAL_NAME).exists()


@pytest.mark.slow
def test_occlusion_on_ray_equals_the_local_engine(ray_cluster, tmp_path):
    folder = _copies(tmp_path, "scene_01.png", "scene_02.jpg", "scene_05.png", "scene_08.jpg")
    local, ray = _both(
        tmp_path, "occlusion", folder, "-m", DEMO, "--save-raw", "--stride", "8", "--top-k", "2"
    )
    assert _comparable(_summary(ray), ray) == _comparable(_summary(local), local)
    _maps_equal(local, ray, 8)  # two classes per image


@pytest.mark.slow
def test_a_corrupt_file_is_one_error_the_rest_is_written(ray_cluster, tmp_path):
    folder = _copies(tmp_path, "scene_01.png", "scene_02.jpg", "scene_03.png")
    (folder / "broken.png").write_bytes((SAMPLES / "scene_05.png").read_bytes()[:300])
    out = tmp_path / "out"
    result = invoke("gradcam", folder, "-m", DEMO, "-o", out, "--engine", "ray", "-b", "2")
    assert result.exit_code == 1
    assert "broken.png: truncated PNG" in result.stderr
    records = {Path(r["input"]).name: r for r in _summary(out)["results"]}
    assert records["broken.png"]["error"].startswith("truncated PNG")
    for name in ("scene_01", "scene_02", "scene_03"):
        assert records[next(k for k in records if k.startswith(name))]["error"] is None
        assert (out / f"{name}_gradcam.png").is_file()
    assert _summary(out)["totals"]["failed"] == 1


@pytest.mark.slow
def test_actors_that_cannot_start_fail_their_inputs_not_the_run(ray_cluster, tmp_path):
    """A model the actors cannot load (here: custom objects that refuse any other process) ends
    as one error line and an error record per input; stdout stays the summary JSON alone."""
    refuse = tmp_path / "custom.py"
    refuse.write_text(
        f"import os\nif os.getpid() != {os.getpid()}:\n"
        "    raise RuntimeError('this node cannot load the model')\n"
    )
    out = tmp_path / "out"
    args = ("gradcam", SAMPLES, "-m", DEMO, "-o", out, "--custom-objects", refuse, "--json", "-q")
    result = invoke(*args, "--engine", "ray", "--workers", 1)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "the Ray job failed (ModelError: " in lines[0] and "this node cannot load" in lines[0]
    assert "12 input(s) not processed: --resume does them" in lines[0]
    summary = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert summary["totals"]["failed"] == 12
    errors = [r["error"] for r in summary["results"]]
    assert all(e.startswith("not processed: the Ray job failed") for e in errors)


@pytest.mark.slow
def test_a_shard_on_ray_then_resume_redoes_only_what_is_missing(ray_cluster, tmp_path):
    local, ray = tmp_path / "local", tmp_path / "ray"
    args = ("gradcam", SAMPLES, "-m", DEMO, "-q", "--shard", "1/3")
    assert invoke(*args, "-o", local).exit_code == 0
    assert invoke(*args, "-o", ray, "--engine", "ray").exit_code == 0
    expected = _comparable(_summary(local), local)
    assert _comparable(_summary(ray), ray) == expected
    shard = [Path(r["input"]).name for r in _summary(ray)["results"]]
    assert 0 < len(shard) < 12  # this shard's inputs only

    gone = Path(_summary(ray)["results"][0]["outputs"]["overlay"])
    kept = {
        Path(r["outputs"]["overlay"]): Path(r["outputs"]["overlay"]).stat().st_mtime_ns
        for r in _summary(ray)["results"][1:]
    }
    gone.unlink()
    again = invoke(*args, "-o", ray, "--engine", "ray", "--resume")
    assert again.exit_code == 0
    assert gone.is_file()  # redone
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # not done twice
    assert _comparable(_summary(ray), ray) == expected


@pytest.mark.slow
def test_an_interrupted_ray_run_keeps_what_finished_and_frees_its_actors(
    ray_cluster, tmp_path, monkeypatch
):
    from cnnvis_cli.output.journal import Journal

    add = Journal.add
    calls: list[int] = []

    def interrupted(self, record):
        calls.append(1)
        add(self, record)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Journal, "add", interrupted)
    out = tmp_path / "out"
    result = invoke("gradcam", SAMPLES, "-m", DEMO, "-o", out, "-q", "-b", "1", "--engine", "ray")
    assert result.exit_code == 130
    summary = _summary(out)
    assert summary["totals"]["interrupted"] is True
    assert summary["totals"]["processed"] == 2 and summary["totals"]["not_processed"] == 10
    for record in summary["results"]:
        assert Path(record["outputs"]["overlay"]).is_file()
    # the actor pool is gone: its CPUs are free again
    deadline = time.monotonic() + 60
    total = ray_cluster.cluster_resources()["CPU"]
    while ray_cluster.available_resources().get("CPU", 0) < total:
        assert time.monotonic() < deadline, ray_cluster.available_resources()
        time.sleep(0.5)


@pytest.mark.slow
def test_sigterm_stops_a_ray_run_with_its_summary(tmp_path):
    """A real signal to a real CLI process that starts (and stops) its own local Ray."""
    pytest.importorskip("ray")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cnnvis_cli", "occlusion", str(SAMPLES), "-m", str(DEMO)]
    command += ["-o", str(out), "-b", "1", "--stride", "2", "--engine", "ray", "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    journal = out / JOURNAL_NAME
    deadline = time.monotonic() + 300
    while not (journal.is_file() and len(journal.read_text().splitlines()) >= 2):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    noise = ("Traceback", "INFO", "WARNING", ".cc:", ".py:", "(raylet)")
    assert not [line for line in stderr.splitlines() if any(word in line for word in noise)]
    summary = _summary(out)
    assert summary["totals"]["interrupted"] is True
    assert 1 <= summary["totals"]["processed"] < 12

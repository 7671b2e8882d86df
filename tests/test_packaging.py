"""Installed as a wheel (as pipx users get it), cnnvis works from any folder: the demo, its
models by name, the report's templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


def _run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_wheel_installed_elsewhere_runs_the_demo_and_check(tmp_path):
    wheels = tmp_path / "wheels"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-q", "-w", str(wheels)],
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("cnnvis-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for part in ("templates/page.html.j2", "templates/report.css", "data/shapes.keras"):
        assert any(name.endswith(part) for name in names), part

    # a fresh environment with the wheel; its dependencies come from the test environment's
    # site-packages (a path entry, so that environment's editable install of cnnvis is not seen)
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
        ).stdout.strip()
    )
    (site / "test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    installed = _run([*pip, "install", "--no-deps", "-q", str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    cnnvis = env_dir / "bin" / "cnnvis"

    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run([str(python), "-c", "import cnnvis_cli; print(cnnvis_cli.__file__)"], cwd=empty)
    assert str(env_dir) in where.stdout  # the wheel, not the repository
    demo = _run([str(cnnvis), "demo", "--method", "gradcam", "-o", "out", "-q"], cwd=empty)
    assert demo.returncode == 0, demo.stderr
    samples = empty / "out" / "samples"
    assert len(list(samples.glob("scene_*"))) == 12
    assert (empty / "out" / "index.html").is_file()
    assert len(list((empty / "out" / "thumbs").glob("*.jpg"))) == 12
    gate = ["--regions", samples / "boxes.json", "--labels", samples / "labels.json", "-q"]
    clean = _run(
        [str(cnnvis), "check", "out/samples", "-m", "demo:shapes", "-o", "c1", *map(str, gate)],
        cwd=empty,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    shortcut = _run(
        [str(cnnvis), "check", "out/samples", "-m", "demo:shortcut", "-o", "c2", *map(str, gate)],
        cwd=empty,
    )
    assert shortcut.returncode == 3, shortcut.stdout + shortcut.stderr
    verdict = json.loads((empty / "c2" / "summary.json").read_text())["check"]
    assert not verdict["passed"] and verdict["hit_rate"] < 0.9  # it looks at the corner mark
    assert verdict["labelled"] == 12 and verdict["misclassified"] <= 1

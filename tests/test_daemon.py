"""The warm-start daemon: protocol, security, warm cache, and end-to-end runs through the client.

Every test that starts a daemon gives it its own runtime folder (``XDG_RUNTIME_DIR`` in a fresh
temporary folder) and kills whatever daemon is left there when it ends, so none outlives the
tests.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import pytest

from cnnvis_cli import warm
from cnnvis_cli.daemon import client, control, protocol
from cnnvis_cli.daemon.server import Daemon
from tests.conftest import invoke, random_rgb, write_image

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_images"
SHAPES = REPO / "cnnvis_cli" / "data" / "shapes.keras"
SHORTCUT = REPO / "cnnvis_cli" / "data" / "shapes_shortcut.keras"
HEAVY_MODULES = ("tensorflow", "keras", "numpy", "cv2", "rich", "typer")
TIMING = re.compile(r'"(seconds|images_per_second)": [^,\n]+')
REPORT_TIMING = re.compile(r"<dt>seconds</dt><dd>[^<]*</dd>")


# -- helpers -----------------------------------------------------------------------------------


def cnnvis_command() -> list[str]:
    """The installed console script (the thin client's entry point), else ``-m``."""
    script = Path(sys.executable).parent / "cnnvis"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cnnvis_cli"]


def base_env(runtime: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CNNVIS_DAEMON"}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.update(extra)
    return env


def run_cli(env, *args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*cnnvis_command(), *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def daemon_processes(runtime: Path) -> list[int]:
    """Pids of daemon processes started for ``runtime`` (found through /proc)."""
    marker = f"XDG_RUNTIME_DIR={runtime}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"cnnvis_cli.daemon.server" in cmdline and marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as info:  # a zombie has exited
        return info.read().split(") ")[1][0] != "Z"


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class DaemonHandle:
    """A daemon in its own runtime folder; ``cleanup`` always leaves none running."""

    def __init__(self) -> None:
        self.runtime = Path(tempfile.mkdtemp(prefix="cnv", dir="/tmp"))  # short socket path
        self.env = base_env(self.runtime)
        self.paths = protocol.runtime_paths({"XDG_RUNTIME_DIR": str(self.runtime)})

    def start(self, *options: object) -> subprocess.CompletedProcess:
        # a short idle timeout: even a test run that is killed leaves no daemon for long
        options = options or ("--idle-timeout", "5m")
        result = run_cli(self.env, "daemon", "start", *options)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def run(self, *args: object, cwd=None, timeout=300) -> subprocess.CompletedProcess:
        return run_cli(self.env, *args, "--daemon", cwd=cwd, timeout=timeout)

    def popen(self, *args: object, cwd=None, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(
            [*cnnvis_command(), *map(str, args), "--daemon"],
            env=self.env,
            cwd=cwd,
            **kwargs,
        )

    def status(self) -> dict:
        result = run_cli(self.env, "daemon", "status", "--json")
        return json.loads(result.stdout)

    def pid(self) -> int:
        return int(Path(self.paths.pidfile).read_text())

    def cleanup(self) -> None:
        run_cli(self.env, "daemon", "stop", timeout=120)
        for pid in daemon_processes(self.runtime):
            with _suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.runtime, ignore_errors=True)


class _suppress:
    def __init__(self, *kinds):
        self.kinds = kinds

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, self.kinds)


@pytest.fixture
def fresh_daemon():
    handle = DaemonHandle()
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture(scope="module")
def daemon():
    """One daemon shared by the module's end-to-end tests (the warm cache persists)."""
    handle = DaemonHandle()
    try:
        handle.start()
        yield handle
    finally:
        handle.cleanup()


def masked(path: Path) -> bytes:
    """File bytes with the timing figures (which legitimately differ) blanked out."""
    data = path.read_bytes()
    if path.name.startswith("summary") and path.suffix == ".json":  # summary-<run>.json too
        return TIMING.sub(r'"\1": T', data.decode()).encode()
    if path.suffix == ".html":
        return REPORT_TIMING.sub("<dt>seconds</dt><dd>T</dd>", data.decode()).encode()
    return data


def assert_same_outputs(expected: Path, actual: Path) -> int:
    """Same files, byte for byte (timing figures aside); returns how many were compared."""
    names = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(actual) for p in actual.rglob("*") if p.is_file())
    for name in names:
        assert masked(expected / name) == masked(actual / name), f"{name} differs"
    return len(names)


def copy_samples(folder: Path, count: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    images = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".png", ".jpg"))
    for image in images[:count]:
        shutil.copy(image, folder / image.name)
    return folder


def many_images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source = SAMPLES / "scene_01.png"
    for i in range(count):
        os.link(source, folder / f"img_{i:04d}.png")
    return folder


# -- protocol and client (no daemon) -----------------------------------------------------------


def test_daemon_flags_are_stripped_before_typer():
    assert client.split_flags(["gradcam", "a.png", "--daemon", "-m", "m.keras"]) == (
        True,
        ["gradcam", "a.png", "-m", "m.keras"],
    )
    assert client.split_flags(["--no-daemon", "x", "--daemon", "--no-daemon"]) == (False, ["x"])
    assert client.split_flags(["x", "--", "--daemon"]) == (None, ["x", "--", "--daemon"])
    assert client.is_daemon_command(["daemon", "status"])
    assert not client.is_daemon_command(["gradcam", "daemon"])  # the first positional only
    assert not client.is_daemon_command(["--version"])
    assert client.env_wants_daemon({"CNNVIS_DAEMON": "1"})
    assert client.env_wants_daemon({"CNNVIS_DAEMON": "yes"})
    assert not client.env_wants_daemon({"CNNVIS_DAEMON": "0"})
    assert not client.env_wants_daemon({})


def test_forwarded_environment_and_import_time_check():
    env = {
        "COLUMNS": "120",
        "TERM": "xterm",
        "NO_COLOR": "1",
        "CNNVIS_X": "y",
        "TF_ENABLE_ONEDNN_OPTS": "0",
        "LC_ALL": "C.UTF-8",
        "HOME": "/home/u",
        "PATH": "/bin",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    sent = protocol.forwarded_env(env)
    assert set(sent) == {
        "COLUMNS",
        "TERM",
        "NO_COLOR",
        "CNNVIS_X",
        "TF_ENABLE_ONEDNN_OPTS",
        "LC_ALL",
        "HOME",
    }
    # cnnvis' own defaults: absent and "3" are the same import
    assert protocol.import_env_mismatch({"TF_CPP_MIN_LOG_LEVEL": "3"}, {}) == []
    assert protocol.import_env_mismatch({}, {"TF_ENABLE_ONEDNN_OPTS": "0"}) == [
        "TF_ENABLE_ONEDNN_OPTS"
    ]
    assert protocol.import_env_mismatch({"COLUMNS": "80"}, {"COLUMNS": "200"}) == []


def test_socket_folder_location_and_permissions(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir()
    assert protocol.runtime_paths({"XDG_RUNTIME_DIR": str(runtime)}).folder == str(
        runtime / "cnnvis"
    )
    cache = tmp_path / "cache"
    paths = protocol.runtime_paths({"XDG_RUNTIME_DIR": "", "XDG_CACHE_HOME": str(cache)})
    assert paths.folder == str(cache / "cnnvis" / "daemon")
    assert protocol.runtime_paths({"XDG_RUNTIME_DIR": str(tmp_path / "missing")}).folder.endswith(
        os.path.join(".cache", "cnnvis", "daemon")
    )
    protocol.ensure_private_dir(paths.folder)
    assert stat.S_IMODE(os.stat(paths.folder).st_mode) == 0o700
    os.chmod(paths.folder, 0o755)  # loosened by someone: tightened again
    protocol.ensure_private_dir(paths.folder)
    assert stat.S_IMODE(os.stat(paths.folder).st_mode) == 0o700
    with pytest.raises(protocol.DaemonError, match="longer than"):
        protocol.check_socket_path("/" + "x" * 200)


class _FakePeer:
    """A connection whose SO_PEERCRED says ``uid``; records what the daemon does with it."""

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.calls: list[str] = []

    def getsockopt(self, level, option, size):
        assert (level, option, size) == (
            protocol.socket.SOL_SOCKET,
            protocol.socket.SO_PEERCRED,
            12,
        )
        self.calls.append("getsockopt")
        return struct.pack("3i", 4242, self.uid, self.uid)

    def __getattr__(self, name):  # recv, sendall, settimeout, close ...
        def record(*args, **kwargs):
            self.calls.append(name)
            if name == "recv":
                return b""
            return None

        return record


def test_peer_uid_check(tmp_path):
    me = os.getuid()
    assert protocol.peer_allowed(me)
    assert not protocol.peer_allowed(me + 1)
    assert not protocol.peer_allowed(0, own_uid=1000)  # root is no exception
    assert protocol.peer_allowed(1000, own_uid=1000)
    daemon = Daemon(protocol.Paths(str(tmp_path)), log=open(os.devnull, "w"))  # noqa: SIM115
    stranger = _FakePeer(me + 1)
    daemon.handle(stranger)
    assert stranger.calls == ["getsockopt", "close"]  # closed unread and unanswered
    friend = _FakePeer(me)
    daemon.handle(friend)
    assert friend.calls[:2] == ["getsockopt", "settimeout"] and "recv" in friend.calls


def test_durations_and_sizes():
    assert control.parse_duration("15m") == 900
    assert control.parse_duration("90") == 90
    assert control.parse_duration("2h") == 7200
    assert control.parse_duration("0") is None
    assert control.parse_duration("never") is None
    assert control.parse_size("4G") == 4 * 1024**3
    assert control.parse_size("512MiB") == 512 * 1024**2
    assert control.parse_size("0") is None
    with pytest.raises(ValueError):
        control.parse_duration("soon")
    assert control.format_duration(3725) == "1h 2m 5s"


def test_client_modules_import_nothing_heavy():
    code = (
        "import sys\n"
        "import cnnvis_cli.daemon.client, cnnvis_cli.daemon.control, cnnvis_cli.daemon.protocol\n"
        f"print([m for m in {HEAVY_MODULES!r} if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_stop_and_status_without_a_daemon(tmp_path):
    env = base_env(tmp_path)
    stopped = run_cli(env, "daemon", "stop")
    assert stopped.returncode == 0 and "no cnnvis daemon is running" in stopped.stdout
    status = run_cli(env, "daemon", "status")
    assert status.returncode == 1 and "no cnnvis daemon is running" in status.stdout


@pytest.mark.slow
def test_fallback_when_no_daemon_runs(tmp_path):
    """CNNVIS_DAEMON=1 without a daemon: one notice line, then the command runs in-process."""
    env = base_env(tmp_path, CNNVIS_DAEMON="1")
    image = copy_samples(tmp_path / "imgs", 1) / "scene_01.png"
    result = run_cli(env, "gradcam", image, "-m", SHAPES, "-o", tmp_path / "out", "-q")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "no daemon is running; running in-process" in lines[0]
    assert (tmp_path / "out" / "scene_01_gradcam.png").is_file()
    # exit codes of the in-process fallback are the command's own; --no-daemon: no notice
    failed = run_cli(env, "gradcam", tmp_path / "nothing.png", "-m", SHAPES, "--no-daemon")
    assert failed.returncode == 2
    assert "running in-process" not in failed.stderr and "nothing to process" in failed.stderr


# -- warm cache (unit level: fake loaders, no TensorFlow needed) ------------------------------


class _Adapter:
    def __init__(self, spec, input_size=(4, 4)) -> None:
        self.source = str(spec)
        self.input_size = input_size


class _Loader:
    def __init__(self, input_size=(4, 4)) -> None:
        self.loads = 0
        self.input_size = input_size

    def __call__(self, spec, **options):
        self.loads += 1
        return _Adapter(spec, self.input_size)


def test_warm_cache_is_inert_until_enabled(tmp_path):
    assert warm.active() is None
    loader = _Loader()
    model = tmp_path / "m.bin"
    model.write_bytes(b"x" * 10)
    first = warm.cached_model(loader, str(model))
    assert warm.cached_model(loader, str(model)) is not first and loader.loads == 2
    built = []

    class Method:
        def __init__(self, adapter, **options):
            built.append(options)

    warm.cached_method(Method, first, batch_size=1)
    warm.cached_method(Method, first, batch_size=1)
    assert len(built) == 2


def test_warm_model_reuse_reload_on_change_and_touch(tmp_path):
    cache = warm.WarmCache(max_models=3)
    loader = _Loader()
    model = tmp_path / "m.keras"
    model.write_bytes(b"a" * 1000)
    first = cache.model(loader, str(model), {"preprocess": "auto"})
    assert cache.model(loader, str(model), {"preprocess": "auto"}) is first
    assert loader.loads == 1 and cache.stats["model_hits"] == 1
    os.utime(model)  # touched: same content, kept
    assert cache.model(loader, str(model), {"preprocess": "auto"}) is first and loader.loads == 1
    info = model.stat()
    model.write_bytes(b"b" * 1000)  # same size, and the old mtime put back: still reloaded
    os.utime(model, ns=(info.st_atime_ns, info.st_mtime_ns))
    second = cache.model(loader, str(model), {"preprocess": "auto"})
    assert second is not first and loader.loads == 2 and cache.stats["model_reloads"] == 1
    # other load options, another spelling of the path, a class-names sidecar: other entries
    assert cache.model(loader, str(model), {"preprocess": "raw"}) is not second
    os.chdir(tmp_path)
    try:
        assert cache.model(loader, "m.keras", {"preprocess": "auto"}) is not second
    finally:
        os.chdir(REPO)
    (tmp_path / "m.classes.json").write_text('["a", "b"]')
    assert cache.model(loader, str(model), {"preprocess": "auto"}) is not second


def test_warm_model_bounds(tmp_path):
    files = []
    for name in "abcd":
        path = tmp_path / f"{name}.keras"
        path.write_bytes(name.encode() * 100)  # 100 bytes: the "weights" of a fake model
        files.append(str(path))
    loader = _Loader()
    cache = warm.WarmCache(max_models=2)
    a = cache.model(loader, files[0], {})
    cache.model(loader, files[1], {})
    assert cache.model(loader, files[0], {}) is a  # a is now the most recent
    cache.model(loader, files[2], {})  # evicts b, the least recently used
    held = [m["source"] for m in cache.snapshot()["models"]]
    assert held == [files[2], files[0]]
    bounded = warm.WarmCache(max_models=10, max_bytes=250)
    for path in files[:3]:
        bounded.model(loader, path, {})
    assert len(bounded.snapshot()["models"]) == 2 and bounded.snapshot()["held_bytes"] == 200
    tiny = warm.WarmCache(max_models=10, max_bytes=50)  # bigger than the bound: not kept
    tiny.model(loader, files[3], {})
    assert tiny.snapshot()["models"] == []


def test_warm_methods_reused_and_dropped(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"m" * 10)
    built: list[dict] = []

    class Method:
        name = "fake"

        def __init__(self, adapter, **options):
            self.options = options
            built.append(options)

        def explain(self, images, progress=None):
            return images

    cache = warm.WarmCache()
    adapter = cache.model(_Loader(), str(model), {})
    one = cache.method(Method, adapter, {"batch_size": 16})
    assert cache.method(Method, adapter, {"batch_size": 16}) is one
    assert cache.method(Method, adapter, {"batch_size": 8}) is not one
    count = len(built)
    # an interrupted command drops the methods it used
    cache.begin_command()
    cache.method(Method, adapter, {"batch_size": 16})
    cache.end_command(interrupted=True)
    assert cache.method(Method, adapter, {"batch_size": 16}) is not one
    assert len(built) == count + 1
    # dynamic input size (traces depend on the image sizes seen): never reused
    dynamic = cache.model(_Loader(input_size=None), str(model), {"x": 1})
    first = cache.method(Method, dynamic, {"batch_size": 1})
    assert cache.method(Method, dynamic, {"batch_size": 1}) is not first
    # an adapter the cache does not hold: built every time
    stranger = _Adapter("other")
    assert cache.method(Method, stranger, {}) is not cache.method(Method, stranger, {})


# -- end to end, through a running daemon ----------------------------------------------------


@pytest.mark.slow
def test_socket_permissions_and_status(daemon, tmp_path):
    info = os.stat(daemon.paths.socket)
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(daemon.paths.folder).st_mode) == 0o700
    image = copy_samples(tmp_path / "imgs", 1) / "scene_01.png"
    before = daemon.status()["commands_served"]
    for _ in range(2):
        result = daemon.run("gradcam", image, "-m", SHAPES, "-o", tmp_path / "out", "-q")
        assert result.returncode == 0, result.stderr
    status = daemon.status()
    assert status["running"] is True and status["command"] is None and status["queued"] == 0
    assert status["pid"] == daemon.pid() and status["uptime"] > 0
    assert status["commands_served"] == before + 2
    assert status["rss_bytes"] > 100 * 1024**2  # TensorFlow is in there
    sources = [m["source"] for m in status["warm"]["models"]]
    assert str(SHAPES) in sources
    text = run_cli(daemon.env, "daemon", "status")
    assert text.returncode == 0
    assert f"pid {daemon.pid()}" in text.stdout and "RSS" in text.stdout
    assert "models held" in text.stdout and str(SHAPES) in text.stdout


@pytest.mark.slow
def test_client_imports_no_tensorflow_numpy_or_rich(daemon, tmp_path):
    image = copy_samples(tmp_path / "imgs", 1) / "scene_01.png"
    command = cnnvis_command()
    if command[0] != sys.executable:
        command = [sys.executable, *command]
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            *command[1:],
            "gradcam",
            image,
            "-m",
            SHAPES,
            "-o",
            tmp_path / "out",
            "-q",
            "--daemon",
        ],
        env=daemon.env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "cnnvis_cli" in imported and "socket" in imported
    assert imported.isdisjoint(HEAVY_MODULES), imported & set(HEAVY_MODULES)
    assert (tmp_path / "out" / "scene_01_gradcam.png").is_file()


@pytest.mark.slow
def test_outputs_byte_identical_to_in_process(daemon, tmp_path, monkeypatch):
    """PNG, .npy, summary.json and report: the same bytes as an in-process run.

    Relative paths resolve against the client's working directory. Single-image commands run
    twice in the daemon: the second time with the warm method (its traced functions).
    """
    commands = [
        ["gradcam", "imgs", "-m", SHAPES, "-o", "out", "--save-raw", "--report", "-b", "4"],
        [
            "occlusion",
            "imgs/scene_02.jpg",
            "imgs/scene_03.png",
            "-m",
            SHAPES,
            "-o",
            "out",
            "--save-raw",
        ],
        ["compare", "imgs/scene_04.jpg", "-m", SHAPES, "-o", "out", "--top-k", "2"],
        ["smoothgrad", "imgs/scene_05.png", "-m", SHAPES, "-o", "out", "--samples", "4"],
    ]
    for method in (
        "gradcam",
        "guided-gradcam",
        "saliency",
        "layercam",
        "gradcam-pp",
        "hirescam",
        "guided",
    ):
        commands.append([method, "imgs/scene_01.png", "-m", SHAPES, "-o", "out", "--save-raw"])
    images = copy_samples(tmp_path / "imgs")
    compared = 0
    for i, command in enumerate(commands):
        expected = tmp_path / f"ref{i}"
        expected.mkdir()
        (expected / "imgs").symlink_to(images)
        monkeypatch.chdir(expected)
        assert invoke(*command, "-q").exit_code == 0
        for attempt in range(2 if "--save-raw" in command else 1):
            actual = tmp_path / f"daemon{i}_{attempt}"
            actual.mkdir()
            (actual / "imgs").symlink_to(images)
            result = daemon.run(*command, "-q", cwd=actual)
            assert result.returncode == 0, result.stderr
            compared += assert_same_outputs(expected / "out", actual / "out")
    assert compared > 60
    uses = {
        m["name"]: m["uses"]
        for model in daemon.status()["warm"]["models"]
        for m in model["methods"]
    }
    assert uses["saliency"] >= 2  # the second run reused the first run's method


@pytest.mark.slow
def test_exit_codes_pass_through(daemon, tmp_path):
    images = copy_samples(tmp_path / "imgs", 1)
    out = tmp_path / "out"
    ok = daemon.run("gradcam", images, "-m", SHAPES, "-o", out, "-q")
    assert ok.returncode == 0, ok.stderr
    (images / "broken.png").write_bytes(b"not a png")
    partial = daemon.run("gradcam", images, "-m", SHAPES, "-o", out, "-q")
    assert partial.returncode == 1 and "broken.png" in partial.stderr
    missing = daemon.run("gradcam", images, "-m", tmp_path / "none.keras", "-o", out)
    assert missing.returncode == 2 and "model file not found" in missing.stderr
    usage = daemon.run("gradcam", images, "--no-such-option")
    assert usage.returncode == 2 and "No such option" in usage.stderr
    check = daemon.run(
        "check",
        SAMPLES,
        "-m",
        SHORTCUT,
        "--regions",
        SAMPLES / "boxes.json",
        "-o",
        tmp_path / "check",
        "-q",
    )
    assert check.returncode == 3, check.stderr
    summary = json.loads((tmp_path / "check" / "summary.json").read_text())
    assert summary["check"]["passed"] is False
    version = daemon.run("--version")
    assert version.returncode == 0 and version.stdout.startswith("cnnvis ")


def long_gradcam(client, tmp_path: Path, out: Path, count: int, batch: int, *extra: object):
    """Start Grad-CAM over ``count`` copies of a scene through ``client`` (a daemon fixture),
    ``batch`` images at a time, long enough to be interrupted; returns the client process."""
    folder = many_images(tmp_path / "many", count)
    return client.popen(
        "gradcam",
        folder,
        "-m",
        SHAPES,
        "-o",
        out,
        "-b",
        str(batch),
        *extra,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for_outputs(folder: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until the command has written its first overlay (so some images are done)."""
    assert wait_for(lambda: any(folder.glob("*.png")) or proc.poll() is not None, timeout)
    assert proc.poll() is None, "the command ended before it could be interrupted"


@pytest.mark.slow
def test_ctrl_c_cancels_the_command_in_the_daemon(daemon, tmp_path):
    count = 3000
    out = tmp_path / "out"
    proc = long_gradcam(daemon, tmp_path, out, count, 2)
    try:
        wait_for_outputs(out, proc)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal does to the client
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode(errors="replace")
    assert time.monotonic() - started < 20
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["interrupted"] is True
    assert 0 < summary["totals"]["processed"] < count
    assert b"Traceback" not in err
    # the daemon lives on and serves the next command
    again = daemon.run(
        "gradcam", SAMPLES / "scene_01.png", "-m", SHAPES, "-o", tmp_path / "o2", "-q"
    )
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
def test_two_clients_at_once_are_both_served(daemon, tmp_path):
    count = 1000
    first = long_gradcam(daemon, tmp_path, tmp_path / "first", count, 1, "-q")
    try:
        wait_for_outputs(tmp_path / "first", first)
        second = daemon.run(
            "gradcam",
            SAMPLES / "scene_01.png",
            "-m",
            SHAPES,
            "-o",
            tmp_path / "second",
            "--save-raw",
            "-q",
        )
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err.decode(errors="replace")
    assert second.returncode == 0, second.stderr
    assert "waiting for it to finish" in second.stderr  # it waited, and was told in one line
    assert len(second.stderr.splitlines()) == 1
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert summary["totals"]["processed"] == count
    alone = daemon.run(
        "gradcam",
        SAMPLES / "scene_01.png",
        "-m",
        SHAPES,
        "-o",
        tmp_path / "alone",
        "--save-raw",
        "-q",
    )
    assert alone.returncode == 0
    for name in ("scene_01_gradcam.png", "scene_01_gradcam.npy"):
        assert (tmp_path / "second" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes()


@pytest.mark.slow
def test_ctrl_c_while_queued_and_import_time_environment(daemon, tmp_path):
    """A queued command cancelled by Ctrl-C ends at once (130) without disturbing the running
    one; a client whose import-time variables differ is refused and runs in-process."""
    first = long_gradcam(daemon, tmp_path, tmp_path / "first", 1000, 1, "-q")
    try:
        wait_for_outputs(tmp_path / "first", first)
        queued = daemon.popen(
            "gradcam",
            SAMPLES / "scene_01.png",
            "-m",
            SHAPES,
            "-o",
            tmp_path / "queued",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(1.5)
        assert queued.poll() is None and first.poll() is None
        queued.send_signal(signal.SIGINT)
        cancelled = time.monotonic()
        queued.communicate(timeout=30)
        assert queued.returncode == 130 and time.monotonic() - cancelled < 5
        assert first.poll() is None  # still running
        assert not (tmp_path / "queued").exists()  # nothing ran
        _, err = first.communicate(timeout=300)
    finally:
        for proc in (first, queued):
            if proc.poll() is None:
                proc.kill()
    assert first.returncode == 0, err.decode(errors="replace")
    env = {**daemon.env, "TF_ENABLE_ONEDNN_OPTS": "0", "CNNVIS_DAEMON": "1"}
    refused = run_cli(env, "gradcam", tmp_path / "none.png", "-m", SHAPES)
    assert refused.returncode == 2  # the in-process run's own error
    assert "other values of TF_ENABLE_ONEDNN_OPTS" in refused.stderr
    assert "running in-process" in refused.stderr and "nothing to process" in refused.stderr


def _save_tiny_model(keras, path: Path, seed: int) -> None:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((24, 24, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, activation="softmax", name="head"),
        ],
        name="tiny",
    )
    model.save(path)


@pytest.mark.slow
def test_changed_model_file_is_reloaded(daemon, tmp_path, keras_mod):
    model = tmp_path / "model.keras"
    image = write_image(tmp_path / "img.png", random_rgb(24, 24, seed=5))

    def explain(tag: str) -> dict:
        result = daemon.run("gradcam", image, "-m", model, "-o", tmp_path / tag, "--save-raw", "-q")
        assert result.returncode == 0, result.stderr
        return json.loads((tmp_path / tag / "summary.json").read_text())["results"][0]

    _save_tiny_model(keras_mod, model, seed=1)
    stamp = model.stat()
    first = explain("a")
    warm_before = daemon.status()["warm"]
    _save_tiny_model(keras_mod, model, seed=2)  # another model at the same path and mtime
    os.utime(model, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    second = explain("b")
    warm_after = daemon.status()["warm"]
    assert second["targets"] != first["targets"]  # the new weights were used
    assert warm_after["model_reloads"] == warm_before["model_reloads"] + 1
    held = [m for m in warm_after["models"] if m["source"] == str(model)]
    assert len(held) == 1  # the old one was dropped, not kept beside it
    assert (
        invoke("gradcam", image, "-m", model, "-o", tmp_path / "ref", "--save-raw", "-q").exit_code
        == 0
    )
    raw = "img_gradcam.npy"
    assert (tmp_path / "ref" / raw).read_bytes() == (tmp_path / "b" / raw).read_bytes()
    os.utime(model)  # touched only: kept
    explain("c")
    warm_touched = daemon.status()["warm"]
    assert warm_touched["model_loads"] == warm_after["model_loads"]
    assert warm_touched["model_hits"] == warm_after["model_hits"] + 1


@pytest.mark.slow
def test_progress_on_a_terminal_of_the_clients_width(daemon, tmp_path):
    """With stderr on a tty, the daemon's Console draws the live bar at the client's width."""
    folder = many_images(tmp_path / "many", 24)

    def run_on_tty(columns: int) -> str:
        master, slave = pty.openpty()
        termios.tcsetwinsize(slave, (30, columns)) if hasattr(termios, "tcsetwinsize") else None
        if not hasattr(termios, "tcsetwinsize"):
            import fcntl

            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
        env = {k: v for k, v in daemon.env.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        proc = subprocess.Popen(
            [
                *cnnvis_command(),
                "gradcam",
                folder,
                "-m",
                SHAPES,
                "-o",
                tmp_path / f"o{columns}",
                "-b",
                "1",
                "--daemon",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=slave,
        )
        os.close(slave)
        output = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the client closed the terminal
                break
            if not chunk:
                break
            output += chunk
        proc.wait(timeout=120)
        os.close(master)
        assert proc.returncode == 0
        return output.decode(errors="replace")

    wide, narrow = run_on_tty(150), run_on_tty(60)
    for text in (wide, narrow):
        assert "\x1b[" in text and "━" in text  # Rich believed it drew on a terminal
    plain = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

    def widest_bar(text: str) -> int:  # the info line is soft-wrapped, so only the bar counts
        lines = plain.sub("", text).replace("\r", "\n").splitlines()
        return max(len(line.rstrip()) for line in lines if "━" in line)

    assert widest_bar(narrow) <= 60 < widest_bar(wide) <= 150


# -- daemons of their own ----------------------------------------------------------------------


@pytest.mark.slow
def test_two_starts_leave_one_daemon_which_exits_when_idle(fresh_daemon):
    starts = [
        subprocess.Popen(
            [*cnnvis_command(), "daemon", "start", "--idle-timeout", "5s"],
            env=fresh_daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in starts]
    assert [p.returncode for p in starts] == [0, 0], outputs
    pids = {int(re.search(r"pid (\d+)", out).group(1)) for out, _ in outputs}
    assert len(pids) == 1
    assert sum("already running" in out for out, _ in outputs) == 1
    assert daemon_processes(fresh_daemon.runtime) == list(pids)
    pid = pids.pop()
    ready = time.monotonic()
    assert wait_for(lambda: not alive(pid), timeout=60)
    assert time.monotonic() - ready >= 3  # not before its idle timeout (5 s after ready)
    assert not os.path.lexists(fresh_daemon.paths.socket)


@pytest.mark.slow
def test_daemon_death_stale_socket_and_sigterm(fresh_daemon, tmp_path):
    fresh_daemon.start()
    pid = fresh_daemon.pid()
    proc = long_gradcam(fresh_daemon, tmp_path, tmp_path / "out", 3000, 2)
    try:
        wait_for_outputs(tmp_path / "out", proc)
        os.kill(pid, signal.SIGKILL)  # the daemon dies mid-command
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2
    last = rest.decode().strip().splitlines()[-1]
    assert "the daemon died while running the command" in last
    assert wait_for(lambda: not alive(pid), timeout=10)
    stale = os.stat(fresh_daemon.paths.socket)  # left behind by the dead daemon
    status = run_cli(fresh_daemon.env, "daemon", "status")
    assert status.returncode == 1 and "stale" in status.stdout
    quick = fresh_daemon.run("gradcam", tmp_path / "none.png", "-m", SHAPES)
    assert quick.returncode == 2 and "no daemon is running" in quick.stderr  # fell back
    started = fresh_daemon.start()
    assert "removed a stale socket" in started.stdout
    new_pid = fresh_daemon.pid()
    assert new_pid != pid and os.stat(fresh_daemon.paths.socket).st_ino != stale.st_ino
    os.kill(new_pid, signal.SIGTERM)
    assert wait_for(lambda: not alive(new_pid), timeout=30)
    assert not os.path.lexists(fresh_daemon.paths.socket)

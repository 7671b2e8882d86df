"""Shared helpers for the benchmark: paths, timing, CPU accounting, machine facts, checks."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WORK = BENCH_DIR / "_work"
CHILD = BENCH_DIR / "bench_child.py"
GIB = 1024**3


def cnnvis_command() -> list[str]:
    """The installed ``cnnvis`` console script next to this interpreter (else ``-m``)."""
    script = Path(sys.executable).parent / "cnnvis"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cnnvis_cli"]


def child_env() -> dict[str, str]:
    """The environment for subprocesses: ours, with TensorFlow's C++ logging off."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


@dataclass
class Timed:
    """One subprocess run: wall time, exit code and the tail of its stderr."""

    seconds: float
    returncode: int
    stderr: str = ""
    cpu: float = 0.0  # the child's user + system CPU seconds


def run_timed(cmd: list[str], *, timeout: float = 600.0) -> Timed:
    """Run ``cmd`` (stdout discarded) and return its wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_env(),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(seconds, proc.returncode, proc.stderr.decode(errors="replace")[-2000:], cpu)


def _thread_ticks() -> dict[int, int]:
    """CPU clock ticks (user + system) of every live thread of this process."""
    ticks: dict[int, int] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return ticks
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks[int(tid)] = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks


@dataclass
class CpuUsage:
    """Wall time and CPU seconds of a section, split by kind of thread.

    ``main`` is the main thread; ``runtime`` the other threads alive before and after the
    section (TensorFlow's thread pools); ``transient`` threads that started or ended inside it
    (the runner's decode and write pools).
    """

    wall: float
    cpu: float
    main: float
    runtime: float
    transient: float

    def utilisation(self, cores: int) -> float:
        """CPU seconds used / CPU seconds available (``cores`` x wall)."""
        return self.cpu / (self.wall * cores) if self.wall > 0 else 0.0

    def as_dict(self, cores: int) -> dict[str, float]:
        return {
            "wall_s": round(self.wall, 4),
            "cpu_s": round(self.cpu, 3),
            "main_thread_cpu_s": round(self.main, 3),
            "runtime_threads_cpu_s": round(self.runtime, 3),
            "transient_threads_cpu_s": round(self.transient, 3),
            "cpu_utilisation": round(self.utilisation(cores), 3),
        }


class CpuMeter:
    """Context manager measuring wall time and this process's CPU time, per kind of thread."""

    def __enter__(self) -> CpuMeter:
        self._ticks = _thread_ticks()
        self._times = os.times()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._start
        times = os.times()
        ticks = _thread_ticks()
        hz = os.sysconf("SC_CLK_TCK")
        cpu = (times.user - self._times.user) + (times.system - self._times.system)
        main_tid = os.getpid()
        main = (ticks.get(main_tid, 0) - self._ticks.get(main_tid, 0)) / hz
        runtime = (
            sum(ticks[t] - self._ticks[t] for t in ticks if t in self._ticks and t != main_tid) / hz
        )
        self.usage = CpuUsage(wall, cpu, main, runtime, max(0.0, cpu - main - runtime))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) * 1024 / GIB, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    """The facts that make absolute numbers comparable: CPU, cores, versions, date, load."""
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "mem_total_gib": _mem_total_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "numpy": _version("numpy"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "cnnvis": _version("cnnvis"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
    }


@dataclass
class Check:
    """One pass/fail figure: ``value`` compared with ``target`` by ``op`` (">=" or "<=")."""

    case: str
    model: str
    name: str
    value: float | None
    target: float
    op: str
    unit: str = ""
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.target if self.op == ">=" else self.value <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "model": self.model,
            "name": self.name,
            "value": None if self.value is None else round(self.value, 4),
            "target": self.target,
            "op": self.op,
            "unit": self.unit,
            "passed": self.passed,
            "detail": self.detail,
            **rounded(self.extra),
        }


def rounded(value: Any, digits: int = 4) -> Any:
    """Round floats (recursively in dicts and lists) for the JSON file."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value

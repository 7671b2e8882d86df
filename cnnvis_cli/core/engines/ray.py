"""``--engine ray``: the inputs explained by a pool of Ray actors (Ray Data), one summary here.

The driver (this process) has already validated the options, found this shard's inputs,
dropped those ``--resume`` finds done and loaded the model (for the header, the fingerprint and
setup errors, exit 2 before Ray starts). It then joins the cluster (``--ray-address``, else
``$RAY_ADDRESS``, else a new local Ray) and streams the inputs, as plain rows, through
``map_batches`` over ``--workers`` actors. Each actor is a long-lived process that loads the model
and builds the method once (``runner.load_adapter``/``build_method``, traced for the same images
per step as the local engine), then runs ``runner.run_method`` itself on each batch of
``--batch-size`` inputs: decoding (regular files only), explaining, rendering and writing the
outputs into ``-o`` (a file system shared at the same path on every node), exactly as the local
engine does. It returns the finished records as JSON; the driver adds them to the summary and
journal as they arrive (so ``--resume`` works after a killed Ray run), feeds the progress bar,
and writes the one summary, report and JUnit file, with the local engine's exit codes.

A batch that raises is retried input by input, so a failing input is an error record, never a
failed job. If the Ray job itself fails (a node lost beyond Ray's retries), every input without a
record becomes an error record naming the failure: exit 1, and ``--resume`` does those again.
Ctrl-C or SIGTERM closes the dataset iteration (which stops the actor pool) and shuts down the Ray
this run started; what finished is in the summary (exit 130/143).

Resources: each actor asks for ``ACTOR_CPUS`` (half a CPU: a scheduling token, not a limit;
TensorFlow in the actor uses the node's cores) and ``--worker-gpus``, so reading and writing
tasks always find a CPU. A local Ray gets at least one CPU beyond its actors'. Ray's logs, progress
bars and usage reporting stay off the terminal: they go to Ray's session logs.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnvis_cli.core.discover import InputItem
from cnnvis_cli.errors import CnnvisError, Terminated
from cnnvis_cli.output.summary import Record, Summary, finite

if TYPE_CHECKING:
    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.runner import MetricEvaluator, Setup
    from cnnvis_cli.evaluation.labels import Labels
    from cnnvis_cli.methods.base import Method
    from cnnvis_cli.output.journal import Journal
    from cnnvis_cli.output.progress import ProgressReporter

RAY_EXTRA = "pip install 'cnnvis[ray]'"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ERROR_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception)): (.+)$")
ACTOR_CPUS = 0.5
TASKS_PER_ACTOR = 2  # batches queued at an actor: one running, one ready
LOCAL_OBJECT_STORE = 256 * 2**20  # rows and records are small
QUIET_ENVIRONMENT = {
    "RAY_BACKEND_LOG_LEVEL": "fatal",  # the driver's C++ core worker logs to stderr
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report leaves the machine
}


def require_ray() -> None:
    """Exit 2 with the extra to install when Ray (with Ray Data) cannot be imported."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise CnnvisError(
            f"--engine ray needs Ray, which cannot be imported here ({exc}); install it with "
            f"{RAY_EXTRA}"
        ) from None


def usable_cores() -> int:
    with contextlib.suppress(AttributeError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _quiet_ray_data() -> None:
    """Ray Data logs to the terminal and draws progress bars by default: not here."""
    import ray.data

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            handler.setLevel(logging.CRITICAL + 1)
    context = ray.data.DataContext.get_current()
    for name in ("enable_progress_bars", "print_on_execution_start"):
        if hasattr(context, name):
            setattr(context, name, False)


def start_ray(config: RunConfig, workers: int | None) -> tuple[str, bool]:
    """Join or start Ray (unless this process already is connected); returns where it runs and
    whether it is a local Ray started here."""
    import ray

    if ray.is_initialized():
        return "the Ray this process joined", False
    address = config.ray_address or os.environ.get("RAY_ADDRESS") or "local"
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    options: dict[str, Any] = {
        "address": address,
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.CRITICAL,
    }
    cpus = 0
    if address == "local":
        cpus = max(usable_cores(), math.ceil((workers or usable_cores()) * ACTOR_CPUS) + 1)
        options.update(num_cpus=cpus, object_store_memory=LOCAL_OBJECT_STORE)
    check_reachable(address)
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    failure = None
    try:
        with discard_native_stderr():  # Ray's C++ start-up and retry lines
            try:
                ray.init(**options)
            except Exception as exc:
                failure = exc
            except SystemExit as exc:  # SIGTERM meanwhile: Ray's own handler exits
                if exc.code == signal.SIGTERM:
                    raise Terminated() from None
                raise
    finally:
        for number, handler in handlers.items():  # ray.init replaces SIGTERM's: keep ours
            signal.signal(number, handler)
    if failure is not None:
        raise CnnvisError(f"cannot start or join Ray at {address} ({_reason(failure)})")
    if address == "local":
        return f"a local Ray ({cpus} CPUs)", True
    return f"the Ray cluster at {address}", False


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse a HOST:PORT nothing answers on now, rather than after Ray's minutes of retries."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # local, auto, ray://...: Ray itself answers quickly
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise CnnvisError(
            f"cannot join Ray at {address} (nothing answers there: {exc.strerror or exc}); check "
            "--ray-address or RAY_ADDRESS"
        ) from None


@contextlib.contextmanager
def discard_native_stderr() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null within the block (Ray's C++ logging writes there)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def remote_errors_unprinted() -> Iterator[None]:
    """Within the block, Ray's driver does not print remote errors (an actor's whole traceback)
    to stdout, where they would break ``--json``: the engine reports them in one line."""
    try:
        from ray._private import worker
    except ImportError:
        worker = None
    original = getattr(worker, "print_to_stdstream", None)
    if original is None:  # another Ray version: nothing to hold back
        yield
        return
    worker.print_to_stdstream = lambda *args, **kwargs: None
    try:
        yield
    finally:
        worker.print_to_stdstream = original


def default_workers(local: bool) -> int:
    """A local Ray: one actor per core; a cluster: one per alive node."""
    if local:
        return usable_cores()
    import ray

    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


def record_json(record: Record) -> str:
    """A record as JSON text (ASCII: file names' undecodable bytes survive as escapes)."""
    return json.dumps(finite(record.to_json()), allow_nan=False)


def explain_items(
    config: RunConfig,
    method: Method,
    items: list[InputItem],
    inputs: set[Path],
    metrics: MetricEvaluator | None = None,
    labels: Labels | None = None,
) -> list[Record]:
    """The records of ``items``, explained, rendered and written by the local engine's code.

    A batch that raises (not an input's own error, which is already a record) is done again
    input by input, so only the input that fails becomes an error record.
    """
    from rich.console import Console

    from cnnvis_cli.core.runner import run_method
    from cnnvis_cli.output.progress import ProgressReporter

    summary = Summary(method=method.name, output_dir=config.out)
    with ProgressReporter(Console(file=io.StringIO()), quiet=True) as reporter:
        try:
            run_method(config, method, items, reporter, summary, None, labels, inputs, metrics)
        except Exception as exc:
            if len(items) > 1:
                return [
                    record
                    for item in items
                    for record in explain_items(config, method, [item], inputs, metrics, labels)
                ]
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            return [Record(str(items[0].path), error=f"cannot explain the image ({reason})")]
    return summary.records


class ExplainWorker:
    """A Ray actor: loads the model and builds the method once, then explains batches of rows.

    ``cwd`` is the driver's working folder, so relative paths (inputs, model, ``-o``) mean the
    same in the actor and the records equal the local engine's.
    """

    def __init__(
        self,
        config: RunConfig,
        image_count: int,
        cwd: str,
        inputs: list[str],
        labels: Labels | None = None,
    ) -> None:
        with contextlib.suppress(OSError):
            os.chdir(cwd)
        from cnnvis_cli.core.tf import tf_and_keras

        tf_and_keras()  # first: TensorFlow's start-up lines stay out of the logs
        from cnnvis_cli.core.runner import MetricEvaluator, build_method, load_adapter
        from cnnvis_cli.output.files import current_umask

        current_umask()  # read once, before any writer thread starts
        self.config = config
        self.method = build_method(config, load_adapter(config), image_count)
        self.inputs = {Path(path) for path in inputs}
        self.labels = labels  # resolved by the driver against the same model
        # built once: its compiled functions are traced for the first batch only
        self.metrics = MetricEvaluator(config, self.method) if config.metric_names else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        items = [
            InputItem(Path(os.fsdecode(path)), Path(os.fsdecode(rel_dir)), os.fsdecode(stem))
            for path, rel_dir, stem in zip(
                batch["path"], batch["rel_dir"], batch["stem"], strict=True
            )
        ]
        records = explain_items(
            self.config, self.method, items, self.inputs, self.metrics, self.labels
        )
        return {"record": [record_json(record) for record in records]}


def _rows(items: list[InputItem]) -> list[dict[str, bytes]]:
    """Inputs as plain rows; paths as bytes, so any file name crosses Arrow unchanged."""
    return [
        {
            "path": os.fsencode(item.path),
            "rel_dir": os.fsencode(item.rel_dir),
            "stem": os.fsencode(item.out_stem),
        }
        for item in items
    ]


def _inputs_inside(items: list[InputItem], out: Path) -> list[str]:
    """Resolved inputs inside the output folder: the only ones an output could overwrite."""
    folder = out.resolve()
    resolved = (item.path.resolve() for item in items)
    return [str(path) for path in resolved if path.is_relative_to(folder)]


def _reason(exc: BaseException) -> str:
    """One line for an exception; for Ray's (which carry the remote traceback as text), the
    last ``SomeError: message`` line of it, without colour codes or module paths."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        return _reason(cause)
    lines = [line.strip() for line in ANSI.sub("", str(exc)).splitlines() if line.strip()]
    for line in reversed(lines):
        found = ERROR_LINE.match(line)
        if found:
            lines = [f"{found.group(1)}: {found.group(2)}"]
            break
    text = " ".join(" ".join(lines).split())
    return (text[:300] or type(exc).__name__).rstrip(".")


def explained_dataset(config: RunConfig, ready: Setup, workers: int) -> Any:
    """The inputs as rows, mapped by ``workers`` actors to their records (lazy, streamed)."""
    import ray.data

    return ray.data.from_items(_rows(ready.items)).map_batches(
        ExplainWorker,
        batch_size=ready.method.batching.images,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            size=workers, max_tasks_in_flight_per_actor=TASKS_PER_ACTOR
        ),
        num_cpus=ACTOR_CPUS,
        num_gpus=config.worker_gpus or None,
        fn_constructor_kwargs={
            "config": config,
            # the local engine's images per step: the same traced shapes, the same maps
            "image_count": max(1, len(ready.items) + len(ready.finished)),
            "cwd": os.getcwd(),
            "inputs": _inputs_inside(ready.items, config.out),
            "labels": ready.labels,
        },
    )


def run(
    config: RunConfig,
    ready: Setup,
    reporter: ProgressReporter,
    summary: Summary,
    journal: Journal | None,
) -> None:
    """Explain ``ready.items`` on Ray into ``summary`` (and ``journal``)."""
    import ray

    items, method = ready.items, ready.method
    if not items:
        reporter.start(0, method.name)
        reporter.finish()
        return
    pending = {str(item.path): item for item in items}

    def accept(record: Record) -> None:
        pending.pop(record.input, None)
        summary.add(record)
        if record.ok:
            if journal is not None:
                journal.add(record)
            for note in record.notes:
                reporter.warning(record.input, note)
        else:
            reporter.error(record.input, record.error or "failed")
        reporter.advance(1, Path(record.input).name)

    def give_up(why: str) -> None:
        """Every input without a record becomes an error (one line for all of them)."""
        reporter.fatal(f"{why}; {len(pending)} input(s) not processed: --resume does them")
        for item in list(pending.values()):
            summary.add(Record(str(item.path), error=f"not processed: {why}"))
        pending.clear()

    joined = ray.is_initialized()
    started = time.perf_counter()
    began = None
    with remote_errors_unprinted():
        try:
            where, local = start_ray(config, config.workers)
            startup = time.perf_counter() - started
            _quiet_ray_data()
            workers = config.workers or default_workers(local)
            reporter.info(
                f"engine ray: {workers} worker(s) on {where}"
                + ("" if joined else f", started in {startup:.1f} s")
            )
            summary.extra["engine"] = {
                "name": "ray",
                "workers": workers,
                "startup_seconds": round(startup, 3),
            }
            dataset = explained_dataset(config, ready, workers)
            reporter.start(len(items), method.name)
            began = time.perf_counter()
            with contextlib.closing(iter(dataset.iter_rows())) as rows:
                for row in rows:
                    if "first_result_seconds" not in summary.extra["engine"]:
                        first = round(time.perf_counter() - began, 3)
                        summary.extra["engine"]["first_result_seconds"] = first
                    accept(Record.from_json(json.loads(row["record"])))
        except KeyboardInterrupt as stop:
            summary.interrupted = True
            summary.terminated = isinstance(stop, Terminated)
        except CnnvisError:
            raise
        except Exception as exc:  # the Ray job failed beyond its retries
            give_up(f"the Ray job failed ({_reason(exc)})")
        finally:
            if began is not None:
                summary.seconds += time.perf_counter() - began
            if not joined and ray.is_initialized():
                with contextlib.suppress(Exception):
                    ray.shutdown()
    if not summary.interrupted:
        if pending:  # a worker stopped without answering for them
            give_up("a Ray worker stopped before it answered")
        reporter.finish()
    summary.records.sort(key=lambda r: r.input)

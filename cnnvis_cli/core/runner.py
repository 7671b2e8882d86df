"""The pipeline: inputs -> batches -> method -> rendered files -> records -> summary.

Decoding runs ahead in threads (``ImageSource``, within a memory budget) and rendering and
writing run behind in another pool, so both overlap the model's compute (OpenCV releases the
GIL). One bad input never stops the run; a setup error stops it before any input is processed.
Whatever happens after setup — failed inputs, Ctrl-C, SIGTERM — the summary is written.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from cnnvis_cli.core.adapter import ModelAdapter
from cnnvis_cli.core.batching import Batching, chunk_size
from cnnvis_cli.core.config import RunConfig
from cnnvis_cli.core.discover import InputItem, discover
from cnnvis_cli.core.engines import check_engine, run_engine
from cnnvis_cli.core.resume import RunIdentity, finished_records, source_of
from cnnvis_cli.core.shards import Shard, item_key, problem_key
from cnnvis_cli.core.signals import terminate_as_interrupt
from cnnvis_cli.core.source import ImageSource, LoadedImage
from cnnvis_cli.core.targets import Targets
from cnnvis_cli.errors import CnnvisError, InputError, Terminated
from cnnvis_cli.evaluation.labels import Labels
from cnnvis_cli.methods.base import Explanation, Method, Panel
from cnnvis_cli.methods.normalize import heat_from_map
from cnnvis_cli.output.files import (
    OutputLock,
    current_umask,
    fit_name,
    remove_stale_temporaries,
    write_npy,
)
from cnnvis_cli.output.journal import Journal
from cnnvis_cli.output.legend import with_legend
from cnnvis_cli.output.progress import ProgressReporter
from cnnvis_cli.output.render import (
    IMAGE_FORMATS,
    SCALE_MODES,
    UPSAMPLE_MODES,
    Display,
    colormap_code,
    display_maps,
    panel,
    render_map,
    resize_map,
    write_image,
)
from cnnvis_cli.output.summary import Record, Summary, TargetRecord, print_json, rounded

WRITES_IN_FLIGHT = 8  # rendered images queued for writing at most
NOT_FINITE = (
    "the model's output is not finite (NaN or infinity) for this image; check the model and its "
    "preprocessing (--preprocess)"
)


def prepare_output_dir(out: Path) -> Path:
    """Create the output folder and prove it is writable, before any work is done."""
    if out.exists() and not out.is_dir():
        raise CnnvisError(
            f"cannot write to output folder {out} (it is a file, not a folder); choose another "
            "-o/--out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CnnvisError(
            f"cannot write to output folder {out} ({reason}); choose another -o/--out"
        ) from None
    return out


def check_writable_file(path: Path, what: str) -> None:
    """Fail before any work when ``path`` (e.g. the --junit file) cannot be written."""
    folder = path.parent
    if path.is_dir():
        raise CnnvisError(f"{what} {path} is a folder; give a file path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CnnvisError(
            f"cannot write {what} {path} ({exc.strerror or exc}); choose another path"
        ) from None


def validate_config(config: RunConfig) -> None:
    """Option checks that need no model: exit 2 before anything is loaded."""
    from cnnvis_cli.evaluation.metrics import metric_names

    check_engine(config)
    if not 0.0 <= config.alpha <= 1.0:
        raise CnnvisError(f"--alpha must be between 0 and 1, got {config.alpha}")
    if config.image_format not in IMAGE_FORMATS:
        raise CnnvisError(
            f"unknown --format {config.image_format!r}; use {', '.join(IMAGE_FORMATS)}"
        )
    if config.scale not in SCALE_MODES:
        raise CnnvisError(f"unknown --scale {config.scale!r}; use {', '.join(SCALE_MODES)}")
    if config.upsample not in UPSAMPLE_MODES:
        raise CnnvisError(
            f"unknown --upsample {config.upsample!r}; use {', '.join(UPSAMPLE_MODES)}"
        )
    try:
        colormap_code(config.colormap)
        Batching(config.batch_size, config.eval_batch)
        if config.class_spec is not None and config.top_k != 1:
            Targets(class_index=0, top_k=config.top_k)  # raises: they conflict
    except ValueError as exc:
        raise CnnvisError(str(exc)) from None
    if config.shard:
        try:
            Shard.parse(config.shard)
        except ValueError as exc:
            raise CnnvisError(str(exc)) from None
    unknown = [m for m in config.metric_names if m not in metric_names()]
    if unknown:
        raise CnnvisError(
            f"unknown metric(s) {', '.join(unknown)} for --metrics; choose from "
            f"{', '.join(metric_names())}"
        )


def build_method(
    config: RunConfig, adapter: ModelAdapter, image_count: int | None = None
) -> Method:
    """Instantiate the run's method for ``adapter``.

    Images per step are the equal-chunk size for ``image_count`` images (one image from a
    shell is traced at batch 1, a folder at ``--batch-size`` or a little less), so every step
    has the same shape and the compiled functions are traced once.
    """
    from cnnvis_cli.methods import get_method
    from cnnvis_cli.warm import cached_method

    cls = get_method(config.method)
    images = config.batch_size
    if image_count:
        images = chunk_size(image_count, config.batch_size)
    if adapter.input_size is None:
        images = 1
    try:
        class_index = adapter.class_index(config.class_spec) if config.class_spec else None
        targets = Targets(class_index, 1 if class_index is not None else config.top_k)
        batching = Batching(images, config.eval_batch)
        options = config.method_options or cls.options_type()
        extra = {"column_options": config.column_options} if config.method == "compare" else {}
        # in the daemon, the method built for the same model and settings (its traced
        # functions); in-process, a new one
        return cached_method(
            cls, adapter, options=options, targets=targets, batching=batching, **extra
        )
    except ValueError as exc:
        raise CnnvisError(str(exc)) from None


def finite_explanation(explanation: Explanation) -> bool:
    """False when the model produced NaN or infinity for this image."""
    if not all(math.isfinite(v) for v in explanation.outputs):
        return False
    return all(np.isfinite(m).all() for m in explanation.maps)


def output_path(out: Path, item: InputItem, ending: str, inputs: set[Path]) -> Path:
    """``OUT/<relative dir>/<stem>_<ending>`` (shortened to fit); InputError if it is an input."""
    path = out / item.rel_dir / fit_name(f"{item.out_stem}_{ending}")
    if path.resolve() in inputs:
        raise InputError(f"output {path} would overwrite an input; choose another -o/--out")
    return path


@dataclass(frozen=True)
class Column:
    """One method's maps of an image and how they are drawn."""

    source: Panel
    display: Display


@dataclass
class Work:
    """One explained image on its way to the writer."""

    loaded: LoadedImage
    explanation: Explanation
    record: Record


class OutputWriter:
    """Renders explanations and writes them in background threads."""

    def __init__(self, config: RunConfig, method: Method, inputs: set[Path], workers: int = 2):
        self.config = config
        self.method = method
        self.adapter = method.adapter
        self.inputs = inputs
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="write")
        self.pending: deque[tuple[LoadedImage, Future]] = deque()

    def output_path(self, item: InputItem, name: str, suffix: str, tag: str = "") -> Path:
        return output_path(self.config.out, item, f"{name}{tag}{suffix}", self.inputs)

    def _columns(self, explanation: Explanation) -> list[Column]:
        """The methods whose maps are drawn (one, or a compare panel's), ready to colour."""
        from cnnvis_cli.methods import get_method

        sources = explanation.panels or [
            Panel(
                self.method.name,
                self.method.title,
                explanation.kind,
                explanation.maps,
                explanation.scales,
            )
        ]
        config = self.config
        columns = []
        for source in sources:
            owner = get_method(source.method) if explanation.panels else self.method
            pixel_level = owner.pixel_level
            display = display_maps(
                source.maps,
                source.kind,
                source.scales,
                joint=config.scale == "joint",
                clip=config.clip if pixel_level else None,
            )
            columns.append(Column(source, display))
        return columns

    def _render(self, original: np.ndarray, column: Column, rank: int):
        return render_map(
            original,
            column.source.maps[rank],
            column.source.kind,
            alpha=self.config.alpha,
            colormap=self.config.colormap,
            upsample=self.config.upsample,
            shown=column.display.maps[rank],
            gain=column.display.gains[rank],
        )

    def render(self, work: Work) -> Record:
        """Write the overlay (and raw) files of every target; returns the finished record."""
        loaded, explanation, record = work.loaded, work.explanation, work.record
        item = loaded.item
        config = self.config
        top_k = len(explanation.maps)
        columns = self._columns(explanation)
        if config.report:  # the report's picture of the input, while it is decoded
            from cnnvis_cli.output.report import thumbnail_path, write_thumbnail

            write_thumbnail(loaded.original, thumbnail_path(item.path, config.out))
        for rank, target in enumerate(record.targets):
            tag = f"_top{rank + 1}" if top_k > 1 else ""
            label = target.class_name or f"class {target.class_index}"
            score = "" if target.score is None else f" {target.score:.3f}"
            ranked = f" (#{rank + 1} of {top_k})" if top_k > 1 else ""
            raws: list[tuple[str, np.ndarray]] = []
            tiles = [("input", loaded.original)]
            for column in columns:
                full, tile = self._render(loaded.original, column, rank)
                tiles.append((column.source.title, tile))
                raws.append((column.source.method, full))
            if not explanation.panels:
                picture = tiles[1][1]
                if config.show_legend:
                    text = f"{self.method.title} | {label}{score}{ranked}"
                    picture = with_legend(picture, explanation.kind, config.colormap, text)
            else:
                kinds = [None, *(c.source.kind for c in columns)] if config.show_legend else None
                header = f"{item.path.name}: {label}{score}{ranked}"
                picture = panel(tiles, header, legends=kinds, colormap=config.colormap)
            path = self.output_path(item, self.method.name, f".{config.image_format}", tag)
            write_image(path, picture, config.image_format)
            target.outputs["overlay"] = str(path)
            if config.save_raw:
                for name, full in raws:
                    raw_path = self.output_path(item, name, ".npy", tag)
                    write_npy(raw_path, full)
                    target.outputs["raw" if len(raws) == 1 else f"raw_{name}"] = str(raw_path)
            if rank == 0 and config.check is not None:
                record.check = config.check.analyze(item.path, raws[0][1], record.label)
        return record

    def _render_then_release(self, work: Work) -> Record:
        """Render and write, then free the image's pixels and memory budget at once: a run
        waiting on the budget must not wait for the main thread to collect this record."""
        try:
            return self.render(work)
        finally:
            work.loaded.release()

    def submit(self, work: Work) -> list[tuple[LoadedImage, Future]]:
        """Queue one image; returns, in order, the writes already finished and those that must
        be waited for to keep at most WRITES_IN_FLIGHT pending (collected promptly, so the
        journal lags the files on disk by as little as possible)."""
        self.pending.append((work.loaded, self.pool.submit(self._render_then_release, work)))
        done = []
        while self.pending and (len(self.pending) > WRITES_IN_FLIGHT or self.pending[0][1].done()):
            done.append(self.pending.popleft())
        return done

    def drain(self) -> list[tuple[LoadedImage, Future]]:
        done = list(self.pending)
        self.pending.clear()
        return done

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class _BatchProgress:
    """Turns a method's per-batch fraction callbacks into image counts for the reporter."""

    def __init__(self, reporter: ProgressReporter, images: int, current: str) -> None:
        self.reporter, self.images, self.current, self.done = reporter, images, current, 0.0

    def __call__(self, fraction: float) -> None:
        fraction = min(max(fraction, self.done), 1.0)
        self.reporter.advance((fraction - self.done) * self.images, self.current)
        self.done = fraction


class MetricEvaluator:
    """The ``--metrics`` of the first target's map, at the model input's resolution."""

    def __init__(self, config: RunConfig, method: Method) -> None:
        from cnnvis_cli.evaluation.metrics import MetricSuite
        from cnnvis_cli.evaluation.metrics.base import MetricSettings

        settings = MetricSettings(
            steps=config.metric_steps, samples=config.metric_samples, batch_size=config.eval_batch
        )
        self.metrics = MetricSuite(method.adapter, config.metric_names, settings)

    def __call__(self, loaded: LoadedImage, explanation: Explanation) -> dict[str, float | None]:
        height, width = loaded.tensor.shape[:2]
        saliency = heat_from_map(resize_map(explanation.maps[0], height, width))
        figures = self.metrics.evaluate(loaded.tensor, saliency, explanation.targets[0])
        return {name: rounded(float(value)) for name, value in figures.items()}


def new_record(loaded: LoadedImage, explanation: Explanation, adapter: ModelAdapter) -> Record:
    """The record of an explained image, before its files are written."""
    targets = [
        TargetRecord(cls, adapter.class_name(cls), rounded(score))
        for cls, score in zip(explanation.targets, explanation.outputs, strict=True)
    ]
    predicted = None
    if explanation.predicted is not None:
        cls, score = explanation.predicted
        predicted = TargetRecord(cls, adapter.class_name(cls), rounded(score))
    facts = explanation.facts.to_json() if explanation.facts is not None else {}
    record = Record(
        str(loaded.item.path), targets, predicted, facts=facts, notes=list(loaded.notes)
    )
    with contextlib.suppress(OSError):  # moved or deleted since it was read: no resume key
        record.source = source_of(loaded.item.path)
    return record


def run_method(
    config: RunConfig,
    method: Method,
    items: list[InputItem],
    reporter: ProgressReporter,
    summary: Summary,
    journal: Journal | None = None,
    labels: Labels | None = None,
    inputs: set[Path] | None = None,
    metrics: MetricEvaluator | None = None,
) -> Summary:
    """Run ``method`` over ``items`` into ``summary`` (and each finished one into ``journal``);
    every input ends up in the summary. ``labels``: expected classes to judge predictions by.
    No output may overwrite one of ``inputs`` (resolved paths; besides ``items``' own).
    ``metrics``: an evaluator to reuse (its traced functions).

    The progress bar counts every input found (``summary.inputs_found``; those already in the
    summary, such as unreadable files or resumed inputs, count as done) and ends at the number of
    records, so after Ctrl-C it shows what the closing table counts."""
    adapter = method.adapter
    source = ImageSource(
        items,
        size=adapter.input_size,
        channels=adapter.channels,
        batch_size=method.batching.images,
        max_pixels=config.max_pixels,
        max_side=config.max_size,
        max_file_size=config.max_file_size * 2**20,
        memory_budget=config.memory_budget * 2**20,
    )
    writer = OutputWriter(
        config, method, {item.path.resolve() for item in items} | (inputs or set())
    )
    if metrics is None and config.metric_names:
        metrics = MetricEvaluator(config, method)

    def fail(item: InputItem, message: str) -> None:
        summary.add(Record(str(item.path), error=message))
        reporter.error(item.path, message)

    def collect(done: list[tuple[LoadedImage, Future]]) -> None:
        for loaded, future in done:
            try:
                record = future.result()
                summary.add(record)
                if journal is not None:
                    journal.add(record)
            except (InputError, OSError) as exc:
                fail(
                    loaded.item,
                    f"cannot write output ({exc})" if isinstance(exc, OSError) else str(exc),
                )
            finally:
                loaded.release()

    started = time.perf_counter()
    reporter.start(max(summary.inputs, len(summary.records) + len(items)), method.name)
    reporter.advance(len(summary.records))
    try:
        for batch in source.batches():
            good: list[LoadedImage] = []
            for item, loaded in batch:
                if isinstance(loaded, InputError):
                    fail(item, str(loaded))
                    reporter.advance(1, item.path.name)
                else:
                    good.append(loaded)
            if not good:
                continue
            tracker = _BatchProgress(reporter, len(good), good[-1].item.path.name)
            explanations = method.explain(np.stack([g.tensor for g in good]), tracker)
            tracker(1.0)
            for loaded, explanation in zip(good, explanations, strict=True):
                if not finite_explanation(explanation):
                    fail(loaded.item, NOT_FINITE)
                    loaded.release()
                    continue
                record = new_record(loaded, explanation, adapter)
                if labels is not None and record.predicted is not None:
                    record.label = labels.judge(loaded.item.path, record.predicted.class_index)
                for note in record.notes:
                    reporter.warning(loaded.item.path, note)
                if metrics is not None:
                    try:
                        record.metrics = metrics(loaded, explanation)
                    except ValueError as exc:
                        fail(loaded.item, f"cannot compute the metrics ({exc})")
                        loaded.release()
                        continue
                collect(writer.submit(Work(loaded, explanation, record)))
    except KeyboardInterrupt as stop:
        summary.interrupted = True
        summary.terminated = isinstance(stop, Terminated)
    finally:
        try:
            collect(writer.drain())
        finally:
            writer.close()
            summary.seconds += time.perf_counter() - started
    reporter.settle(len(summary.records))
    summary.records.sort(key=lambda r: r.input)
    return summary


def render_settings(config: RunConfig) -> dict[str, object]:
    """How the pictures were drawn, as the summary's ``render``."""
    return {
        "format": config.image_format,
        "legend": config.show_legend,
        "scale": config.scale,
        "clip": config.clip,
        "alpha": config.alpha,
        "colormap": config.colormap,
        "upsample": config.upsample,
    }


def _header(config: RunConfig, method: Method, items: list[InputItem], resumed: int) -> list[str]:
    adapter = method.adapter
    layer = getattr(method, "layer", None)
    layers = getattr(method, "layers", None) or ([layer] if layer is not None else [])
    word = "layers" if len(layers) > 1 else "layer"
    layer_note = f", {word} {', '.join(info.path for info in layers)}" if layers else ""
    shard = f" (shard {config.shard})" if config.shard else ""
    done = f", {resumed} already done (--resume)" if resumed else ""
    lines = [
        f"cnnvis {config.title or method.name}: {len(items)} image(s){shard}{done}, model "
        f"{adapter.source}{layer_note}",
        f"preprocess {adapter.preprocess_mode} ({adapter.preprocess_reason})",
    ]
    return lines + [f"note: {note}" for note in method.notes()]


def finish_outputs(
    config: RunConfig, summary: Summary, report: Callable[[str], None]
) -> int | None:
    """Write the summary, JUnit and report; an exit code of 2 if one cannot be written."""
    try:
        summary.write()
        if config.junit is not None:
            from cnnvis_cli.output.junit import write_junit

            write_junit(
                config.junit, summary.records, summary.check or {}, config.title or summary.method
            )
        if config.report:
            from cnnvis_cli.output.report import write_report

            write_report(summary.to_dict(), config.out)
    except OSError as exc:
        report(f"cannot write the summary, report or JUnit file ({exc.strerror or exc})")
        return 2
    return None


def open_inputs(
    config: RunConfig, lock: OutputLock, junit: Path | None
) -> tuple[list[InputItem], list[tuple[Path, str]]]:
    """Option checks, the output folder (locked, stale temporaries removed) and every input;
    CnnvisError when nothing can be processed."""
    validate_config(config)
    if junit is not None:
        check_writable_file(junit, "the JUnit file")
    prepare_output_dir(config.out)
    lock.acquire()
    remove_stale_temporaries(config.out)
    items, problems = discover(config.images, recursive=config.recursive, out_dir=config.out)
    if not items and problems:
        reasons = "; ".join(f"{path}: {message}" for path, message in problems)
        raise CnnvisError(f"nothing to process ({reasons})")
    if not items:
        raise CnnvisError(no_images_message(config))
    return items, problems


def load_adapter(config: RunConfig) -> ModelAdapter:
    """The run's model, loaded as its options say (in the daemon, the model it holds when the
    file is unchanged)."""
    from cnnvis_cli.core.loading import load_model
    from cnnvis_cli.warm import cached_model

    return cached_model(
        load_model,
        config.model,
        class_names=config.class_names,
        preprocess=config.preprocess,
        weights=config.weights,
        output=config.output,
        unsafe=config.unsafe_load,
        custom_objects=config.custom_objects,
    )


@dataclass
class Setup:
    """Everything a run needs once its options, inputs and model are known to be usable."""

    items: list[InputItem]  # this run's inputs (this shard's), still to do
    problems: list[tuple[Path, str]]
    method: Method
    identity: RunIdentity
    finished: dict[str, Record]  # inputs a previous run already did (--resume)
    found: int  # every input found (all shards)
    labels: Labels | None = None  # expected classes (--labels)


def shard_inputs(
    config: RunConfig, items: list[InputItem], problems: list[tuple[Path, str]]
) -> tuple[list[InputItem], list[tuple[Path, str]]]:
    """This shard's inputs and problems (all of them without --shard)."""
    if not config.shard:
        return items, problems
    shard = Shard.parse(config.shard)
    return (
        [item for item in items if shard.holds(item_key(item))],
        [(path, message) for path, message in problems if shard.holds(problem_key(path))],
    )


def setup(config: RunConfig, lock: OutputLock) -> Setup:
    """Validate, lock the output folder, find the inputs, load the model, build the method."""
    from cnnvis_cli.core.fingerprint import fingerprint

    everything, all_problems = open_inputs(config, lock, config.junit)
    items, problems = shard_inputs(config, everything, all_problems)
    labels = Labels(config.labels) if config.labels is not None else None
    adapter = load_adapter(config)
    method = build_method(config, adapter, max(1, len(items)))
    if labels is not None:
        labels.resolve(adapter)
    identity = RunIdentity(
        fingerprint(config.model, config.weights), method.name, method.params(), config.shard
    )
    finished = finished_records(config.out, identity, items) if config.resume else {}
    todo = [item for item in items if str(item.path) not in finished]
    return Setup(todo, problems, method, identity, finished, len(items) + len(problems), labels)


def run(config: RunConfig, *, stdout: Console | None = None, stderr: Console | None = None) -> int:
    """Run one explanation command end to end and return its exit code."""
    stdout = stdout or Console()
    stderr = stderr or Console(stderr=True)
    current_umask()  # read once, in the main thread, before any writer thread starts
    with ProgressReporter(stderr, quiet=config.quiet) as reporter, terminate_as_interrupt():
        lock = OutputLock(config.out)
        try:
            ready = setup(config, lock)
        except CnnvisError as exc:
            lock.release()
            reporter.fatal(str(exc))
            return exc.exit_code
        except KeyboardInterrupt as stop:
            lock.release()
            return 143 if isinstance(stop, Terminated) else 130
        try:
            summary, failed = execute(config, ready, reporter)
        finally:
            lock.release()
    if config.json_output:
        print_json(summary.to_json())
    if not config.quiet:
        summary.print_table(
            stderr if config.json_output else stdout,
            title=f"cnnvis {config.title or summary.method}",
        )
    return failed if failed is not None else summary.exit_code()


def execute(
    config: RunConfig, ready: Setup, reporter: ProgressReporter
) -> tuple[Summary, int | None]:
    """Process the inputs, then write the summary, JUnit and report (exit 2 if they fail)."""
    method = ready.method
    for line in _header(config, method, ready.items, len(ready.finished)):
        reporter.info(line)
    run_name = f"check-{method.name}" if config.check is not None else method.name
    summary = Summary(method=method.name, output_dir=config.out, run=run_name)
    summary.model = method.adapter.describe()
    summary.params = method.params()
    summary.extra = {"fingerprint": ready.identity.fingerprint, "render": render_settings(config)}
    if config.title:
        summary.extra["title"] = config.title
    if config.shard:
        summary.extra["shard"] = config.shard
    summary.inputs_found = ready.found
    for record in ready.finished.values():
        summary.add(record)
    for path, message in ready.problems:
        reporter.error(path, message)
        summary.add(Record(str(path), error=message))
    journal = Journal(config.out, ready.identity.header())
    for record in ready.finished.values():
        journal.add(record)
    engine_failed = None
    try:
        run_engine(config, ready, reporter, summary, journal)
    except KeyboardInterrupt as stop:
        summary.interrupted = True
        summary.terminated = isinstance(stop, Terminated)
    except CnnvisError as exc:  # the engine could not start (e.g. no Ray cluster there)
        reporter.fatal(str(exc))
        engine_failed = exc.exit_code
    if config.check is not None:
        processed = [r for r in summary.records if r.ok]
        summary.check = config.check.verdict(
            [r.check for r in processed], [r.label for r in processed]
        )
    failed = finish_outputs(config, summary, reporter.fatal) or engine_failed
    journal.close(remove=failed is None)
    return summary, failed


def no_images_message(config: RunConfig) -> str:
    """Why nothing was found, with the one hint that applies."""
    where = ", ".join(str(p) for p in config.images)
    hint = ""
    if not config.recursive and any(
        Path(p).is_dir() and any(child.is_dir() for child in Path(p).iterdir())
        for p in config.images
    ):
        hint = " (use -r to search sub-folders)"
    return f"no images found in {where}{hint}"

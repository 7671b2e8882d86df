"""The pipeline: inputs -> batches -> method -> rendered files -> summary.

Decoding runs ahead in a thread pool (``ImageSource``) and PNG encoding/writing runs behind in
another, so both overlap the model's compute (OpenCV releases the GIL). One bad input never
stops the run; a setup error stops it before any input is processed.
"""

from __future__ import annotations

import tempfile
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape

from cnnvis_cli.check import RegionCheck, heat_from_map, write_junit
from cnnvis_cli.errors import CnnvisError, InputError
from cnnvis_cli.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    ImageSource,
    InputItem,
    LoadedImage,
    discover,
)
from cnnvis_cli.render import (
    DIVERGING,
    colormap_code,
    overlay,
    panel,
    resize_map,
    signed_to_image,
    write_npy,
    write_png,
)
from cnnvis_cli.summary import Summary

DEFAULT_OUT = Path("cnnvis-out")


@dataclass
class RunConfig:
    """Everything a run needs, as parsed from the command line."""

    method: str
    inputs: list[str]
    model: str
    out: Path = DEFAULT_OUT
    method_options: dict[str, Any] = field(default_factory=dict)
    class_spec: str | None = None
    top_k: int = 1
    batch_size: int = 16
    alpha: float = 0.4
    colormap: str = "jet"
    preprocess: str = "auto"
    class_names: Path | None = None
    save_raw: bool = False
    json_output: bool = False
    quiet: bool = False
    recursive: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_size: int = DEFAULT_MAX_SIDE
    weights: str = "imagenet"
    output: str | None = None
    unsafe_load: bool = False
    custom_objects: Path | None = None
    metrics: tuple[str, ...] = ()
    metric_steps: int = 32
    report: bool = False
    check: RegionCheck | None = None
    junit: Path | None = None


def prepare_output_dir(out: Path) -> Path:
    """Create the output folder and prove it is writable, before any work is done."""
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


def validate_render_options(config: RunConfig) -> None:
    if not 0.0 <= config.alpha <= 1.0:
        raise CnnvisError(f"--alpha must be between 0 and 1, got {config.alpha}")
    if config.batch_size < 1:
        raise CnnvisError(f"--batch-size must be at least 1, got {config.batch_size}")
    try:
        colormap_code(config.colormap)
    except ValueError as exc:
        raise CnnvisError(str(exc)) from None


def build_method(config: RunConfig, adapter: Any, image_count: int | None = None) -> Any:
    """Instantiate the run's method for ``adapter``.

    When all ``image_count`` images fit in one batch of a method whose batch counts images,
    the batch shrinks to them and the method runs eagerly: tracing a function that is called
    once costs more than it saves (a single image from a shell starts ~1.5 s sooner).
    """
    from cnnvis_cli.methods import get_method

    class_index = adapter.class_index(config.class_spec) if config.class_spec else None
    cls = get_method(config.method)
    if adapter.forward_only and cls.needs_gradients:
        raise CnnvisError(
            f"{adapter.source}: a SavedModel directory exposes forward passes only (no layers "
            f"or gradients), so {cls.name} cannot run on it; use `cnnvis occlusion`, or load "
            "the .keras file the model was saved from"
        )
    batch_size = config.batch_size if adapter.input_size is not None else 1
    single_batch = image_count is not None and image_count <= batch_size
    eager = single_batch and cls.batch_counts_images
    if eager:
        batch_size = max(1, image_count)
    try:
        return cls(
            adapter,
            class_index=class_index,
            top_k=config.top_k,
            batch_size=batch_size,
            eager=eager,
            **config.method_options,
        )
    except ValueError as exc:
        raise CnnvisError(str(exc)) from None


class OutputWriter:
    """Renders explanations and writes them in background threads, at most ``limit`` pending."""

    def __init__(self, config: RunConfig, method: Any, inputs: set[Path], workers: int = 2):
        self.config = config
        self.method = method
        self.inputs = inputs
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="write")
        self.pending: deque[tuple[InputItem, Future]] = deque()
        self.limit = max(4, 2 * config.batch_size)

    def output_path(self, item: InputItem, name: str, suffix: str, tag: str = "") -> Path:
        path = self.config.out / item.rel_dir / f"{item.out_stem}_{name}{tag}{suffix}"
        if path.resolve() in self.inputs:
            raise InputError(f"output {path} would overwrite an input; choose another -o/--out")
        return path

    def picture(
        self, original: np.ndarray, native: np.ndarray, method: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """The map at the image's own resolution, and the picture to save for it."""
        height, width = original.shape[:2]
        full = resize_map(native, height, width)
        if method.signed:
            return full, signed_to_image(full)
        if getattr(method, "diverging", False):  # signed heatmap in [-1, 1]
            full = np.clip(full, -1.0, 1.0)
            heat = (full + 1.0) / 2.0
            return full, overlay(original, heat, alpha=self.config.alpha, colormap=DIVERGING)
        full = np.clip(full, 0.0, 1.0)
        picture = overlay(original, full, alpha=self.config.alpha, colormap=self.config.colormap)
        return full, picture

    def render(
        self, loaded: LoadedImage, explanation: Any, extras: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Write overlay (and raw) files for every target.

        Returns the summary's target records and the image's extra figures (``extras`` plus the
        region check, which needs the first target's map at the image's own resolution).
        """
        adapter = self.method.adapter
        columns = explanation.extras.get("columns")
        top_k = len(explanation.maps)
        targets = []
        for rank, (cls, score) in enumerate(
            zip(explanation.class_indices, explanation.scores, strict=True)
        ):
            tag = f"_top{rank + 1}" if top_k > 1 else ""
            outputs: dict[str, str] = {}
            raws: list[tuple[str, np.ndarray]] = []
            if columns is None:
                full, picture = self.picture(loaded.original, explanation.maps[rank], self.method)
                raws.append((self.method.name, full))
            else:
                tiles = [("input", loaded.original)]
                for method, maps in columns:
                    full, tile = self.picture(loaded.original, maps[rank], method)
                    tiles.append((method.title, tile))
                    raws.append((method.name, full))
                label = adapter.class_name(cls) or f"class {cls}"
                picture = panel(tiles, f"{loaded.item.path.name}: {label} ({score:.3f})")
            path = self.output_path(loaded.item, self.method.name, ".png", tag)
            write_png(path, picture)
            outputs["overlay"] = str(path)
            if self.config.save_raw:
                for name, full in raws:
                    raw_path = self.output_path(loaded.item, name, ".npy", tag)
                    write_npy(raw_path, full)
                    outputs["raw" if len(raws) == 1 else f"raw_{name}"] = str(raw_path)
            targets.append(
                {
                    "class_index": cls,
                    "class_name": adapter.class_name(cls),
                    "score": round(score, 6),
                    "outputs": outputs,
                }
            )
            if rank == 0 and self.config.check is not None:
                extras = {
                    **extras,
                    "check": self.config.check.analyze(loaded.item.path, raws[0][1]),
                }
        return targets, extras

    def submit(
        self, loaded: LoadedImage, explanation: Any, extras: dict[str, Any]
    ) -> list[tuple[InputItem, Future]]:
        """Queue one image; returns the writes that finished if the queue was full."""
        future = self.pool.submit(self.render, loaded, explanation, extras)
        self.pending.append((loaded.item, future))
        done = []
        while len(self.pending) > self.limit:
            done.append(self.pending.popleft())
        return done

    def drain(self) -> list[tuple[InputItem, Future]]:
        done = list(self.pending)
        self.pending.clear()
        return done

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class _BatchProgress:
    """Turns a method's per-batch fraction callbacks into image counts for the reporter."""

    def __init__(self, reporter: Any, images: int, current: str) -> None:
        self.reporter, self.images, self.current, self.done = reporter, images, current, 0.0

    def __call__(self, fraction: float) -> None:
        self.reporter.advance((fraction - self.done) * self.images, self.current)
        self.done = fraction


def evaluate_metrics(
    metrics: Any, method: Any, loaded: LoadedImage, explanation: Any
) -> dict[str, float]:
    """Deletion/insertion AUCs of the first target's map, at the model input's resolution."""
    height, width = loaded.tensor.shape[:2]
    saliency = heat_from_map(resize_map(explanation.maps[0], height, width))
    figures = metrics.evaluate(loaded.tensor, saliency, explanation.class_indices[0])
    return {name: round(float(value), 6) for name, value in figures.items()}


def _record(summary: Summary, item: InputItem, future: Future, reporter: Any) -> None:
    try:
        targets, extras = future.result()
    except (InputError, OSError) as exc:
        message = f"cannot write output ({exc})" if isinstance(exc, OSError) else str(exc)
        summary.add_failure(item.path, message)
        reporter.error(item.path, message)
    else:
        summary.add_success(item.path, targets, **extras)


def run_method(
    config: RunConfig, adapter: Any, method: Any, items: list[InputItem], reporter: Any
) -> Summary:
    """Run ``method`` over ``items``; every input ends up in the summary, failed or not."""
    summary = Summary(method=method.name, output_dir=config.out)
    summary.model = adapter.describe()
    summary.params = method.params()
    source = ImageSource(
        items,
        size=adapter.input_size,
        channels=adapter.channels,
        batch_size=method.batch_size,
        max_pixels=config.max_pixels,
        max_side=config.max_size,
    )
    inputs = {item.path.resolve() for item in items}
    writer = OutputWriter(config, method, inputs)
    metrics = None
    if config.metrics:
        from cnnvis_cli.metrics import FaithfulnessMetrics

        metrics = FaithfulnessMetrics(
            adapter, metrics=config.metrics, steps=config.metric_steps, batch_size=method.batch_size
        )
    started = time.perf_counter()
    reporter.start(len(items), method.name)
    try:
        for batch in source.batches():
            good: list[LoadedImage] = []
            for item, loaded in batch:
                if isinstance(loaded, InputError):
                    summary.add_failure(item.path, str(loaded))
                    reporter.error(item.path, str(loaded))
                    reporter.advance(1, item.path.name)
                else:
                    good.append(loaded)
            if not good:
                continue
            tracker = _BatchProgress(reporter, len(good), good[-1].item.path.name)
            explanations = method.explain(np.stack([g.tensor for g in good]), tracker)
            tracker(1.0)
            for loaded, explanation in zip(good, explanations, strict=True):
                extras = dict(explanation.extras_for_summary())
                if metrics is not None:
                    extras["metrics"] = evaluate_metrics(metrics, method, loaded, explanation)
                for item, future in writer.submit(loaded, explanation, extras):
                    _record(summary, item, future, reporter)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        for item, future in writer.drain():
            _record(summary, item, future, reporter)
        writer.close()
        summary.seconds = time.perf_counter() - started
    order = {str(item.path): i for i, item in enumerate(items)}
    summary.results.sort(key=lambda r: order.get(r["input"], len(order)))
    return summary


def run(config: RunConfig, *, stdout: Console | None = None, stderr: Console | None = None) -> int:
    """Run one explanation command end to end and return its exit code."""
    from cnnvis_cli.model import load_model
    from cnnvis_cli.progress import ProgressReporter

    stdout = stdout or Console()
    stderr = stderr or Console(stderr=True)
    with ProgressReporter(stderr, quiet=config.quiet) as reporter:
        try:
            validate_render_options(config)
            prepare_output_dir(config.out)
            items, problems = discover(
                config.inputs, recursive=config.recursive, out_dir=config.out
            )
            if not items and problems:
                reasons = "; ".join(f"{path}: {message}" for path, message in problems)
                raise CnnvisError(f"nothing to process ({reasons})")
            if not items:
                where = ", ".join(config.inputs)
                raise CnnvisError(f"no images found in {where} (use -r to search sub-folders)")
            adapter = load_model(
                config.model,
                class_names=config.class_names,
                preprocess=config.preprocess,
                weights=config.weights,
                output=config.output,
                unsafe=config.unsafe_load,
                custom_objects=config.custom_objects,
            )
            method = build_method(config, adapter, len(items))
        except CnnvisError as exc:
            stderr.print(f"[red]error[/red]: {escape(str(exc))}", highlight=False, soft_wrap=True)
            return exc.exit_code
        layer = getattr(method, "layer", None)
        layer_note = f", layer {layer.path}" if layer is not None else ""
        reporter.info(
            f"cnnvis {method.name}: {len(items)} image(s), model {adapter.source}{layer_note}"
        )
        for note in method.notes():
            reporter.info(f"note: {note}")
        summary = Summary(method=method.name, output_dir=config.out)
        for path, message in problems:
            reporter.error(path, message)
        try:
            summary = run_method(config, adapter, method, items, reporter)
        except KeyboardInterrupt:
            summary.interrupted = True
        for path, message in problems:
            summary.add_failure(path, message)
    if config.check is not None:
        summary.check = config.check.verdict(summary.results)
    try:
        summary.write()
        if config.junit is not None:
            write_junit(config.junit, summary.results, summary.check, summary.method)
        if config.report:
            from cnnvis_cli.report import write_report

            write_report(summary.to_dict(), config.out)
    except OSError as exc:
        stderr.print(f"[red]error[/red]: cannot write the summary ({exc})", soft_wrap=True)
    if config.json_output:
        print(summary.to_json(), flush=True)
    if not config.quiet:
        summary.print_table(stderr if config.json_output else stdout)
    return summary.exit_code()

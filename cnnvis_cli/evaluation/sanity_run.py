"""``cnnvis sanity``'s pipeline: inputs -> batches -> the randomisation test -> files -> verdict.

The same contracts as an explanation run (``core/runner.py``, whose helpers it uses): option
checks before any work, a locked output folder, inputs streamed in memory-budgeted batches,
atomic writes, one bad input never stops the run, and ``sanity.json`` (strict JSON) always
written once setup succeeded — also after Ctrl-C or SIGTERM. Outputs in ``-o OUT``:

- ``OUT/<relative dir>/<stem>_sanity.png``: the image's grid (a row per method, a column per step);
- ``OUT/sanity_plot.png``: mean similarity against the randomisation step, a line per method;
- ``OUT/sanity.json``: settings, steps, per-method mean and standard deviation of every measure
  at every step, the verdict, and per image its class and its values;
- ``--junit FILE``, ``--report`` (``OUT/index.html``), ``--json`` (sanity.json on stdout).

Exit codes: 0 every method passed, 3 a method failed (as ``check``), 1 some inputs failed (and
none failed the verdict), 2 usage or setup error, 130/143 interrupted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from cnnvis_cli.core.batching import Batching, chunk_size
from cnnvis_cli.core.config import RunConfig
from cnnvis_cli.core.runner import load_adapter, open_inputs, output_path
from cnnvis_cli.core.signals import terminate_as_interrupt
from cnnvis_cli.core.source import ImageSource
from cnnvis_cli.errors import (
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    CnnvisError,
    InputError,
    Terminated,
)
from cnnvis_cli.evaluation.sanity import (
    ImageSanity,
    SanityOptions,
    SanityTest,
    mean_curves,
    verdict,
)
from cnnvis_cli.options import Options
from cnnvis_cli.output.files import OutputLock, current_umask
from cnnvis_cli.output.progress import ProgressReporter
from cnnvis_cli.output.render import write_png
from cnnvis_cli.output.summary import Record, Summary, TargetRecord, print_json, rounded

SANITY_NAME = "sanity.json"


def _record(path: Path, result: ImageSanity, adapter: Any, grid: Path | None) -> Record:
    target = TargetRecord(
        result.class_index, adapter.class_name(result.class_index), rounded(result.score)
    )
    if grid is not None:
        target.outputs["grid"] = str(grid)
    cls, score = result.predicted
    predicted = TargetRecord(cls, adapter.class_name(cls), rounded(score))
    similarity = {
        method: {measure: [rounded(v) for v in values] for measure, values in per.items()}
        for method, per in result.similarity.items()
    }
    return Record(str(path), [target], predicted, facts={"similarity": similarity})


class _Run:
    """One sanity run's state between setup and the summary."""

    def __init__(
        self, config: RunConfig, options: SanityOptions, test: SanityTest, items: list[Any]
    ):
        self.config, self.options, self.test, self.items = config, options, test, items
        self.adapter = test.clone
        self.inputs = {item.path.resolve() for item in items}
        self.results: list[ImageSanity] = []
        self.titles = {name: m.title for name, m in test.methods.items()}
        self.labels = ["trained", *(step.label for step in test.plan)]

    def grid(self, loaded: Any, result: ImageSanity) -> Path:
        from cnnvis_cli.output.sanity import grid_picture

        name = self.adapter.class_name(result.class_index) or f"class {result.class_index}"
        header = f"{loaded.item.path.name}: {name} ({result.score:.3f}), {self.test.test}"
        tile = min(128, int(loaded.tensor.shape[0]))  # never enlarge a small model's maps
        picture = grid_picture(loaded.tensor, result.maps, self.titles, self.labels, header, tile)
        path = output_path(self.config.out, loaded.item, "sanity.png", self.inputs)
        write_png(path, picture)
        return path

    def stream(self, reporter: ProgressReporter, summary: Summary) -> None:
        config = self.config
        source = ImageSource(
            self.items,
            size=self.adapter.input_size,
            channels=self.adapter.channels,
            batch_size=self.test.batching.images,
            max_pixels=config.max_pixels,
            max_side=config.max_size,
            max_file_size=config.max_file_size * 2**20,
            memory_budget=config.memory_budget * 2**20,
        )
        for batch in source.batches():
            good = []
            for item, loaded in batch:
                if isinstance(loaded, InputError):
                    summary.add(Record(str(item.path), error=str(loaded)))
                    reporter.error(item.path, str(loaded))
                    reporter.advance(1, item.path.name)
                else:
                    good.append(loaded)
            if not good:
                continue
            done = 0.0

            def progress(
                fraction: float, count: int = len(good), name: str = good[-1].item.path.name
            ):
                nonlocal done
                reporter.advance((fraction - done) * count, name)
                done = fraction

            try:
                results = self.test.run(np.stack([g.tensor for g in good]), progress)
                for loaded, result in zip(good, results, strict=True):
                    self.finish(loaded, result, reporter, summary)
            finally:
                for loaded in good:
                    loaded.release()

    def finish(
        self, loaded: Any, result: ImageSanity, reporter: ProgressReporter, summary: Summary
    ) -> None:
        path = loaded.item.path
        if result.error is not None:
            summary.add(Record(str(path), error=result.error))
            reporter.error(path, result.error)
            return
        try:
            grid = self.grid(loaded, result)
        except (InputError, OSError) as exc:
            message = f"cannot write output ({exc})" if isinstance(exc, OSError) else str(exc)
            summary.add(Record(str(path), error=message))
            reporter.error(path, message)
            return
        for note in loaded.notes:
            reporter.warning(path, note)
        result.maps = {}  # the grid is written: keep only the figures
        self.results.append(result)
        record = _record(path, result, self.adapter, grid)
        record.notes = list(loaded.notes)
        summary.add(record)

    def sanity(self) -> dict[str, Any]:
        """The ``sanity`` block of sanity.json (curves, verdict) from the images done so far."""
        methods = list(self.test.methods)
        curves = mean_curves(self.results, methods, len(self.test.plan))
        return {
            "test": self.test.test,
            "statistic": "spearman_abs",
            "steps": [step.to_json(self.test.groups) for step in self.test.plan],
            "methods": {m: {"title": self.titles[m], **curves[m]} for m in methods},
            "verdict": verdict(
                curves, self.test.plan, self.options.max_similarity, len(self.results)
            ),
            "plot": None,
        }


def _write_outputs(
    config: RunConfig,
    options: SanityOptions,
    summary: Summary,
    run: _Run,
    failed_inputs: list[tuple[str, str]],
) -> None:
    from cnnvis_cli.output.sanity import PLOT_NAME, junit_cases, plot_png, write_plot

    sanity = summary.extra["sanity"]
    if run.results:
        plot = config.out / PLOT_NAME
        verdict_info = sanity["verdict"]
        title = f"{run.adapter.source}: {run.test.test} randomisation, {len(run.results)} image(s)"
        write_plot(
            plot,
            plot_png(
                {m: sanity["methods"][m] for m in run.test.methods},
                run.labels,
                run.titles,
                title=title,
                threshold=verdict_info["max_similarity"],
                threshold_measure=verdict_info["statistic"],
            ),
        )
        sanity["plot"] = str(plot)
    summary.write(config.out / SANITY_NAME)
    if options.junit is not None:
        from cnnvis_cli.output.junit import write_suite

        verdict_info = sanity["verdict"]
        properties = {k: v for k, v in verdict_info.items() if k != "methods"}
        write_suite(options.junit, "cnnvis sanity", junit_cases(sanity, failed_inputs), properties)
    if config.report:
        from cnnvis_cli.output.report import write_report

        write_report(summary.to_dict(), config.out)


def run_sanity(
    config: RunConfig,
    options: SanityOptions,
    method_options: dict[str, Options | None],
    *,
    stdout: Console | None = None,
    stderr: Console | None = None,
) -> int:
    """Run ``cnnvis sanity`` end to end and return its exit code."""
    stdout = stdout or Console()
    stderr = stderr or Console(stderr=True)
    current_umask()
    with ProgressReporter(stderr, quiet=config.quiet) as reporter, terminate_as_interrupt():
        lock = OutputLock(config.out)
        try:
            items, problems = open_inputs(config, lock, options.junit)
            adapter = load_adapter(config)
            class_index = adapter.class_index(config.class_spec) if config.class_spec else None
            test = SanityTest(
                adapter,
                {name: method_options.get(name) for name in options.names},
                steps=options.steps,
                independent=options.independent,
                seed=options.seed,
                class_index=class_index,
                batching=Batching(chunk_size(len(items), config.batch_size), config.eval_batch),
                upsample=config.upsample,
                reload=lambda: load_adapter(config),
            )
        except CnnvisError as exc:
            lock.release()
            reporter.fatal(str(exc))
            return exc.exit_code
        except ValueError as exc:
            lock.release()
            reporter.fatal(str(exc))
            return EXIT_USAGE
        except KeyboardInterrupt as stop:
            lock.release()
            return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
        failed_write = False
        try:
            reporter.info(
                f"cnnvis sanity: {len(items)} image(s), model {adapter.source}, "
                f"{test.test} randomisation of {len(test.groups)} layer group(s) in "
                f"{len(test.plan)} step(s), methods {', '.join(test.methods)}"
            )
            for note in test.notes():
                reporter.info(f"note: {note}")
            summary = Summary(method="sanity", output_dir=config.out)
            summary.model = adapter.describe()
            summary.params = {**test.params(), "max_similarity": options.max_similarity}
            summary.inputs_found = len(items) + len(problems)
            for path, message in problems:
                reporter.error(path, message)
                summary.add(Record(str(path), error=message))
            run = _Run(config, options, test, items)
            started = time.perf_counter()
            reporter.start(len(items), "sanity")
            try:
                run.stream(reporter, summary)
                reporter.finish()
            except KeyboardInterrupt as stop:
                summary.interrupted = True
                summary.terminated = isinstance(stop, Terminated)
            finally:
                summary.seconds = time.perf_counter() - started
            order = {str(item.path): i for i, item in enumerate(items)}
            summary.records.sort(key=lambda r: order.get(r.input, len(order)))
            summary.extra = {"sanity": run.sanity()}
            failed_inputs = [(r.input, r.error) for r in summary.records if r.error]
            try:
                _write_outputs(config, options, summary, run, failed_inputs)
            except OSError as exc:
                reporter.fatal(
                    f"cannot write sanity.json, the plot, the report or JUnit file "
                    f"({exc.strerror or exc})"
                )
                failed_write = True
        finally:
            lock.release()
    data = summary.to_dict()
    if config.json_output:
        print_json(summary.to_json())
    if not config.quiet:
        from cnnvis_cli.output.sanity import print_sanity

        print_sanity(stderr if config.json_output else stdout, data, "cnnvis sanity")
    code = summary.exit_code()
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        return code
    if failed_write:
        return EXIT_USAGE
    if data["sanity"]["verdict"]["passed"] is False:
        return EXIT_CHECK_FAILED
    return code

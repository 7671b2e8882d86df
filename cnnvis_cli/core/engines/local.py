"""The local engine: every input explained in this process by ``core.runner.run_method``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.runner import Setup
    from cnnvis_cli.output.journal import Journal
    from cnnvis_cli.output.progress import ProgressReporter
    from cnnvis_cli.output.summary import Summary


def run(
    config: RunConfig,
    ready: Setup,
    reporter: ProgressReporter,
    summary: Summary,
    journal: Journal | None,
) -> None:
    from cnnvis_cli.core.runner import run_method

    run_method(config, ready.method, ready.items, reporter, summary, journal, ready.labels)

"""Engines: where a run's inputs are explained once setup has found them and loaded the model.

``local`` runs them in this process (``core.runner.run_method``); ``ray`` runs the same function
in a pool of Ray actors (``engines/ray.py``). Both fill the same :class:`Summary` and journal, so
the summary, report, JUnit file, exit code, ``--shard`` and ``--resume`` do not depend on the
engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnvis_cli.errors import CnnvisError

if TYPE_CHECKING:
    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.core.runner import Setup
    from cnnvis_cli.output.journal import Journal
    from cnnvis_cli.output.progress import ProgressReporter
    from cnnvis_cli.output.summary import Summary

ENGINES = ("local", "ray")


def check_engine(config: RunConfig) -> None:
    """Option checks of the engine, before any model is loaded (exit 2)."""
    if config.engine not in ENGINES:
        raise CnnvisError(f"unknown --engine {config.engine!r}; use {' or '.join(ENGINES)}")
    if config.engine == "ray":
        from cnnvis_cli.core.engines.ray import require_ray

        require_ray()
        return
    given = [
        flag
        for flag, value in (
            ("--ray-address", config.ray_address),
            ("--workers", config.workers),
            ("--worker-gpus", config.worker_gpus or None),
        )
        if value is not None
    ]
    if given:
        raise CnnvisError(f"{', '.join(given)}: only with --engine ray")


def run_engine(
    config: RunConfig,
    ready: Setup,
    reporter: ProgressReporter,
    summary: Summary,
    journal: Journal | None,
) -> None:
    """Explain ``ready.items`` with the configured engine into ``summary`` (and ``journal``)."""
    if config.engine == "ray":
        from cnnvis_cli.core.engines import ray

        ray.run(config, ready, reporter, summary, journal)
    else:
        from cnnvis_cli.core.engines import local

        local.run(config, ready, reporter, summary, journal)

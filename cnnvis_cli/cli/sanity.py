"""``cnnvis sanity``: does the map depend on what the model learned? (exit 3 when it does not)."""

from __future__ import annotations

import inspect
from typing import Any

import typer

from cnnvis_cli.cli.errors import user_errors
from cnnvis_cli.cli.methods import column_options, options_classes, run_config, with_signature
from cnnvis_cli.cli.parameters import given, merged_parameters, parameters

# RunConfig fields that mean nothing here: one target per image, no overlays or metrics
NOT_FOR_SANITY = frozenset({"top_k", "save_raw", "metrics", "metric_steps", "metric_samples"})


def sanity_command() -> Any:
    """The Typer command function of ``cnnvis sanity``."""
    from cnnvis_cli.core.config import RunConfig
    from cnnvis_cli.evaluation.sanity import SanityOptions

    common = [p for p in parameters(RunConfig) if p.name not in NOT_FOR_SANITY]
    own = parameters(SanityOptions)
    own_names = [p.name for p in own]
    merged = merged_parameters(options_classes(), skip={"methods", *own_names})
    merged_names = [p.name for p in merged]

    def sanity(ctx: typer.Context, **values: Any) -> None:
        from cnnvis_cli.evaluation.sanity_run import run_sanity

        with user_errors():
            options = SanityOptions(**{name: values[name] for name in own_names})
            columns = column_options(options.names, given(ctx, merged_names, values))
            config = run_config(values, title="sanity")
        raise typer.Exit(run_sanity(config, options, columns))

    context = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
    )
    with_signature(sanity, [context, *common, *own, *merged])
    sanity.__doc__ = (
        "Should I trust this map? Re-initialise the model's weights from the top down (Adebayo "
        "et al., 2018) and measure how much each method's map changes; exit 3 when a map "
        "survives the randomisation."
    )
    return sanity

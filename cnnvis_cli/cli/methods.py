"""One command per registered method, generated from ``RunConfig`` and the method's options.

``cnnvis NAME`` takes the common options (``RunConfig``'s fields) and the method's own
(``options_type``'s fields). ``cnnvis compare`` takes the union of every method's options: those
given apply to each chosen method that has them (an option no chosen method takes is an error).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import typer

from cnnvis_cli.cli.errors import user_errors
from cnnvis_cli.cli.parameters import METHOD_PANEL, cli_fields, given, merged_parameters, parameters

EPILOGS = {
    "gradcam": "cnnvis gradcam photo.jpg -m model.keras\n\n"
    "cnnvis gradcam photos/ -r -m model.keras -o out/ --save-raw --top-k 3",
    "occlusion": "cnnvis occlusion photo.jpg -m model.keras --patch 16 --stride 8 --signed",
    "compare": "cnnvis compare photo.jpg -m model.keras --methods gradcam,smoothgrad --samples 8",
    "rise": "cnnvis rise photo.jpg -m model.keras --samples 2000 --grid 7 --seed 1",
    "kernelshap": "cnnvis kernelshap photo.jpg -m model.keras --n-segments 50 --samples 1024",
    "lime": "cnnvis lime photo.jpg -m model.keras --segments grid --n-segments 64",
    "sobol": "cnnvis sobol photo.jpg -m model.keras --grid 8 --designs 32 --baseline blur",
}


def options_classes(names: list[str] | None = None) -> dict[str, type]:
    """Each method's options dataclass (imports the method modules)."""
    from cnnvis_cli.methods import get_method, method_names

    return {name: get_method(name).options_type for name in names or method_names()}


def column_options(chosen: list[str], values: dict[str, Any]) -> dict[str, Any]:
    """Options for each chosen method from the union values a user gave; ValueError for a given
    option that no chosen method takes."""
    classes = options_classes(chosen)
    unused = [
        name for name in values if not any(name in cls.field_names() for cls in classes.values())
    ]
    if unused:
        flags = ", ".join("--" + name.replace("_", "-") for name in unused)
        raise ValueError(f"{flags}: not an option of {', '.join(chosen)}")
    return {name: cls.from_values(values) for name, cls in classes.items()}


def run_config(values: dict[str, Any], **fixed: Any) -> Any:
    """A RunConfig from the command's values (RunConfig fields only) and ``fixed`` fields."""
    from cnnvis_cli.core.config import RunConfig

    names = {item.name for item, _ in cli_fields(RunConfig)}
    return RunConfig(**{k: v for k, v in values.items() if k in names}, **fixed)


def run_and_exit(config: Any) -> None:
    from cnnvis_cli.core.runner import run

    raise typer.Exit(run(config))


def common_parameters() -> list[inspect.Parameter]:
    from cnnvis_cli.core.config import RunConfig

    return parameters(RunConfig)


def with_signature(function: Callable[..., Any], params: list[inspect.Parameter]) -> Callable:
    """Give ``function(**kwargs)`` the signature Typer reads its parameters from."""
    function.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return function


def method_command(name: str) -> Callable[..., None]:
    """The Typer command function of method ``name``."""
    from cnnvis_cli.methods import get_method, method_summary

    cls = get_method(name)
    own = parameters(cls.options_type, panel=METHOD_PANEL)
    merged: list[inspect.Parameter] = []
    if name == "compare":
        merged = merged_parameters(options_classes(), skip={"methods"})
    own_names = [p.name for p in own]
    merged_names = [p.name for p in merged]

    def command(ctx: typer.Context, **values: Any) -> None:
        with user_errors():
            options = cls.options_type(**{k: values[k] for k in own_names})
            columns = {}
            if name == "compare":
                columns = column_options(options.names, given(ctx, merged_names, values))
            config = run_config(values, method=name, method_options=options, column_options=columns)
        run_and_exit(config)

    context = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
    )
    with_signature(command, [context, *common_parameters(), *own, *merged])
    command.__doc__ = method_summary(name)
    command.__name__ = name.replace("-", "_")
    return command


def build_click_command(name: str, function: Callable[..., None], panel: str) -> Any:
    """A click command for ``function`` (a one-command Typer app resolves to the command)."""
    single = typer.Typer(
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    epilog = EPILOGS.get(name)
    single.command(
        name=name,
        rich_help_panel=panel,
        epilog=f"[bold]Example[/bold]\n\n{epilog}" if epilog else None,
    )(function)
    command = typer.main.get_command(single)
    command.name = name
    return command

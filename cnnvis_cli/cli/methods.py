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
    "cnnvis gradcam photos/ -r -m model.keras -o out/ --save-raw --top-k 3 --legend",
    "gradcam-pp": "cnnvis gradcam-pp crowd.jpg -m model.keras -c person",
    "hirescam": "cnnvis hirescam photo.jpg -m model.keras --layer conv5_block3_out",
    "layercam": "cnnvis layercam photo.jpg -m keras:MobileNetV2 --layer block_6_expand_relu",
    "scorecam": "cnnvis scorecam photo.jpg -m model.keras --max-channels 64",
    "occlusion": "cnnvis occlusion photo.jpg -m model.keras --patch 16 --stride 8 --signed",
    "saliency": "cnnvis saliency photo.jpg -m model.keras --clip 99.5",
    "smoothgrad": "cnnvis smoothgrad photo.jpg -m model.keras --samples 50 --noise 0.15",
    "integrated-gradients": "cnnvis integrated-gradients photo.jpg -m model.keras --steps 64 "
    "--baseline blur",
    "guided": "cnnvis guided photo.jpg -m model.keras -c 3",
    "guided-gradcam": "cnnvis guided-gradcam photo.jpg -m model.keras --format jpg",
    "compare": "cnnvis compare photo.jpg -m model.keras --methods gradcam,smoothgrad --samples 8"
    "\n\ncnnvis compare photos/ -m demo:shapes --report -o out/",
    "check": "cnnvis check val/ -m model.keras --regions val/boxes.json --labels "
    "val/labels.json --junit cnnvis.xml --report -o reports/",
    "layers": "cnnvis layers model.keras\n\ncnnvis layers keras:ResNet50 --weights none --all "
    "--plain | grep conv5",
    "demo": "cnnvis demo\n\ncnnvis demo --method gradcam -o /tmp/demo",
    "rise": "cnnvis rise photo.jpg -m model.keras --samples 2000 --grid 7 --seed 1",
    "kernelshap": "cnnvis kernelshap photo.jpg -m model.keras --n-segments 50 --samples 1024",
    "lime": "cnnvis lime photo.jpg -m model.keras --segments grid --n-segments 64",
    "sobol": "cnnvis sobol photo.jpg -m model.keras --grid 8 --designs 32 --baseline blur",
}
"""Examples shown under each command's --help (every method and tool has one)."""


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
    from cnnvis_cli.methods import get_method, method_names, method_summary

    cls = get_method(name)
    own = parameters(cls.options_type, panel=METHOD_PANEL)
    merged: list[inspect.Parameter] = []
    if name == "compare":
        merged = merged_parameters(options_classes(), skip={"methods"})
    own_names = [p.name for p in own]
    merged_names = [p.name for p in merged]
    summary = method_summary(name)
    if name == "compare":
        choices = ", ".join(m for m in method_names() if m != "compare")
        summary += f"\n\nMethods for --methods: {choices}."

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
    command.__doc__ = summary
    command.__name__ = name.replace("-", "_")
    return command


def build_click_command(name: str, function: Callable[..., None], panel: str) -> Any:
    """A click command for ``function`` (a one-command Typer app resolves to the command)."""
    single = typer.Typer(
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        add_completion=False,
    )
    single.command(name=name, rich_help_panel=panel, epilog=epilog(name))(function)
    command = typer.main.get_command(single)
    command.name = name
    return readable_help(command)


def epilog(name: str) -> str | None:
    """The ``Examples`` section of a command's --help."""
    text = EPILOGS.get(name)
    return f"[bold]Examples[/bold]\n\n{text}" if text else None


def readable_help(command: Any) -> Any:
    """Help that shows metavars people read: no Python types (``<bool>`` for a flag,
    ``<list[str]>`` for the images); recent Typer versions print them where a parameter has no
    metavar, older ones print nothing there."""
    for param in command.params:
        _plain(param)
    get_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = get_help_option(ctx)
        return _plain(option) if option is not None else None

    command.get_help_option = help_option
    return command


def _plain(param: Any) -> Any:
    """No type column for a flag or an argument; ``IMAGES...`` (not ``{IMAGES...}...``) in the
    usage line."""
    if getattr(param, "is_flag", False) or param.param_type_name == "argument":
        param.display_type_rich = lambda ctx=None: None
    if param.param_type_name == "argument" and hasattr(param, "_usage_display_name"):
        param._usage_display_name = lambda: param.metavar or param.name.upper()
    return param

"""Command-line parameters generated from option dataclasses.

Every field declared with :func:`cnnvis_cli.options.option` becomes a Typer argument or option
with its flags, help, metavar, bounds and help panel; a command's signature is assembled from the
fields of ``RunConfig`` and of the method's ``Options`` (for ``compare`` and ``check``: of every
method's, merged by name).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Annotated, Any

import typer

from cnnvis_cli.options import flag_names, spec_of

METHOD_PANEL = "Method options"


def _cli_type(hint: Any) -> Any:
    """The type Typer parses a field as (``str | float`` is parsed as ``str``)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        chosen = members[0] if len(members) == 1 else str
        return chosen | None if type(None) in typing.get_args(hint) else chosen
    return hint


def cli_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, Typer type) of each command-line field of a dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    found = []
    for item in dataclasses.fields(cls):
        spec = spec_of(item)
        if spec is None or spec.hidden:
            continue
        found.append((item, _cli_type(hints[item.name])))
    return found


def _default(item: dataclasses.Field) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return inspect.Parameter.empty


def default_metavar(kind: Any) -> str | None:
    """A readable metavar for an option declared without one (flags take none)."""
    base = _cli_type(kind)
    members = [a for a in typing.get_args(base) if a is not type(None)] or [base]
    names = {int: "N", float: "X", str: "TEXT"}
    return None if bool in members else names.get(members[0], "PATH")


def parameter(
    item: dataclasses.Field,
    kind: Any,
    *,
    panel: str | None = None,
    help_suffix: str = "",
    own_default: bool = True,
) -> inspect.Parameter:
    """The ``inspect.Parameter`` (with a Typer annotation) for one dataclass field.

    ``own_default=False``: the default is "not given" (each method applies its own), shown as
    such in ``--help``.
    """
    spec = spec_of(item)
    assert spec is not None
    help_text = spec.help + help_suffix
    metavar = spec.metavar or default_metavar(kind)
    default = _default(item)
    if spec.argument:
        info = typer.Argument(help=help_text, metavar=metavar, show_default=False)
    else:
        extra: dict[str, Any] = {}
        if spec.min is not None:
            extra["min"] = spec.min
        if spec.max is not None:
            extra["max"] = spec.max
        if not own_default or default is None:  # None: decided at run time (e.g. --legend)
            extra["show_default"] = False
        if spec.envvar:
            extra["envvar"] = spec.envvar
        info = typer.Option(
            *flag_names(item),
            help=help_text,
            metavar=metavar,
            rich_help_panel=spec.panel or panel,
            **extra,
        )
    if not own_default and kind is not bool:
        default = None
        kind = (
            kind | None if typing.get_origin(kind) not in (typing.Union, types.UnionType) else kind
        )
    if spec.required:
        default = inspect.Parameter.empty
    elif default is inspect.Parameter.empty and not spec.argument:
        default = None
    return inspect.Parameter(
        item.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, info], default=default
    )


def parameters(cls: type, *, panel: str | None = None) -> list[inspect.Parameter]:
    """Parameters for every command-line field of ``cls``, with its own defaults."""
    return [parameter(item, kind, panel=panel) for item, kind in cli_fields(cls)]


def merged_parameters(
    classes: dict[str, type], *, skip: set[str], panel: str = METHOD_PANEL
) -> list[inspect.Parameter]:
    """One parameter per field name across several methods' options (``compare``, ``check``).

    A field several methods share (``--layer``, ``--baseline``) appears once; its help says which
    methods take it. The default is "not given": each method applies its own.
    """
    owners: dict[str, list[str]] = {}
    first: dict[str, tuple[dataclasses.Field, Any]] = {}
    for method, cls in classes.items():
        for item, kind in cli_fields(cls):
            if item.name in skip:
                continue
            owners.setdefault(item.name, []).append(method)
            if item.name not in first:
                first[item.name] = (item, kind)
            elif first[item.name][1] != kind:
                raise TypeError(f"option {item.name!r} has two types across methods")
    merged = []
    for name, (item, kind) in first.items():
        suffix = f" (for {', '.join(owners[name])}; default: each method's own)"
        merged.append(parameter(item, kind, panel=panel, help_suffix=suffix, own_default=False))
    return merged


def given(ctx: typer.Context, names: list[str], values: dict[str, Any]) -> dict[str, Any]:
    """The values among ``names`` that the user set (on the command line or in the
    environment), as opposed to defaults."""
    chosen = {}
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            chosen[name] = values[name]
    return chosen

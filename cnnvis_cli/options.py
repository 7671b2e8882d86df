"""Typed, frozen option sets whose fields carry their own command-line metadata.

A method's ``Options`` (and the run's ``RunConfig``) is a frozen dataclass; each field is declared
with :func:`option`, which records the flag, help text, metavar and bounds next to the default.
The command line is generated from these fields (``cnnvis_cli.cli.parameters``), validation lives
in the dataclass' ``__post_init__``, and the summary's ``params`` is ``asdict(options)``. This
module imports nothing heavy, so building ``--help`` stays instant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

CLI = "cli"  # the key of a field's metadata that holds its OptionSpec


@dataclass(frozen=True)
class OptionSpec:
    """How one dataclass field appears on the command line."""

    help: str
    flags: tuple[str, ...] = ()  # default: --field-name
    metavar: str | None = None
    min: float | None = None
    max: float | None = None
    panel: str | None = None  # the --help panel it is listed under
    argument: bool = False  # a positional argument rather than an option
    hidden: bool = False  # not on the command line (set by code only)
    required: bool = False  # the command line must give it
    envvar: str | None = None  # an environment variable that sets it when the flag is absent


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flags: tuple[str, ...] = (),
    metavar: str | None = None,
    min: float | None = None,
    max: float | None = None,
    panel: str | None = None,
    argument: bool = False,
    hidden: bool = False,
    required: bool = False,
    envvar: str | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with command-line metadata (see :class:`OptionSpec`)."""
    spec = OptionSpec(help, flags, metavar, min, max, panel, argument, hidden, required, envvar)
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata={CLI: spec})
    return field(default=default, metadata={CLI: spec})


def spec_of(item: dataclasses.Field) -> OptionSpec | None:
    """The command-line metadata of a dataclass field, if it has any."""
    return item.metadata.get(CLI)


def flag_names(item: dataclasses.Field) -> tuple[str, ...]:
    """The flags of a field: its declared ones, else ``--field-name``."""
    spec = spec_of(item)
    if spec is not None and spec.flags:
        return spec.flags
    return ("--" + item.name.replace("_", "-"),)


def check_range(
    name: str, value: float | None, low: float | None = None, high: float | None = None
):
    """Raise ValueError naming the flag when ``value`` lies outside [low, high]."""
    if value is None:
        return
    if low is not None and value < low:
        raise ValueError(f"{name} must be at least {low:g}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be at most {high:g}, got {value}")


@dataclass(frozen=True)
class Options:
    """Base of every method's options. Subclasses declare fields with :func:`option`."""

    def as_params(self) -> dict[str, Any]:
        """The options as the summary records them."""
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Options:
        """Build from a mapping, ignoring keys this class does not have and None values."""
        names = set(cls.field_names())
        return cls(**{k: v for k, v in values.items() if k in names and v is not None})

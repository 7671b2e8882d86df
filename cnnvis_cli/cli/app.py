"""The ``cnnvis`` command line: Typer wiring only.

Method commands are generated from the method registry (``cli/methods.py``) and built lazily:
``cnnvis --help`` lists them from the registry's one-line summaries without importing a method
module (so it stays instant); ``cnnvis gradcam ...`` imports only Grad-CAM's. TensorFlow is only
imported when a model is loaded.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from cnnvis_cli import __version__

METHODS_PANEL = "Methods"
TOOLS_PANEL = "Tools"


CHECK_SUMMARY = (
    "Does the model look at the right place? Energy inside known regions and the pointing game; "
    "exit 3 when the set fails."
)

SANITY_SUMMARY = (
    "Should I trust this map? Randomise the weights layer by layer and see whether each "
    "method's map changes; exit 3 when one does not."
)


class LazyGroup(TyperGroup):
    """The top-level group: method commands (and ``check`` and ``sanity``, which take every
    method's options) are built on first use; listing them for ``--help`` imports nothing."""

    _listing = False

    def lazy_commands(self) -> dict[str, tuple[str, str]]:
        """name -> (one-line summary, help panel) of the commands built on demand."""
        from cnnvis_cli.methods import method_names, method_summary

        found = {name: (method_summary(name), METHODS_PANEL) for name in method_names()}
        found["check"] = (CHECK_SUMMARY, TOOLS_PANEL)
        found["sanity"] = (SANITY_SUMMARY, TOOLS_PANEL)
        return found

    def list_commands(self, ctx: Any) -> list[str]:
        lazy = list(self.lazy_commands())
        return [*lazy, *(name for name in self.commands if name not in lazy)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        lazy = self.lazy_commands()
        if cmd_name in self.commands or cmd_name not in lazy:
            command = self.commands.get(cmd_name)
            if command is not None:
                from cnnvis_cli.cli.methods import readable_help

                readable_help(command)
            return command
        summary, panel = lazy[cmd_name]
        if self._listing or ctx.resilient_parsing:  # --help listing or completion: no import
            stub = TyperCommand(cmd_name, help=summary)
            stub.rich_help_panel = panel
            return stub
        from cnnvis_cli.cli.methods import build_click_command, method_command

        if cmd_name == "check":
            from cnnvis_cli.cli.check import check_command

            function = check_command()
        elif cmd_name == "sanity":
            from cnnvis_cli.cli.sanity import sanity_command

            function = sanity_command()
        else:
            function = method_command(cmd_name)
        command = build_click_command(cmd_name, function, panel)
        self.commands[cmd_name] = command
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from cnnvis_cli.cli.methods import readable_help

        readable_help(self)
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="cnnvis",
    cls=LazyGroup,
    help="See where a convolutional network looks: heatmap overlays for Keras image models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnnvis {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """See where a convolutional network looks: heatmap overlays for Keras image models."""


def _register_tools() -> None:
    from cnnvis_cli.cli.demo import demo
    from cnnvis_cli.cli.layers import layers
    from cnnvis_cli.cli.maximize import EPILOG, maximize
    from cnnvis_cli.cli.merge import merge
    from cnnvis_cli.cli.methods import epilog
    from cnnvis_cli.daemon.commands import daemon_app

    app.command(name="layers", rich_help_panel=TOOLS_PANEL, epilog=epilog("layers"))(layers)
    app.command(name="maximize", rich_help_panel=TOOLS_PANEL, epilog=EPILOG)(maximize)
    app.command(name="merge", rich_help_panel=TOOLS_PANEL, epilog=epilog("merge"))(merge)
    app.command(name="demo", rich_help_panel=TOOLS_PANEL, epilog=epilog("demo"))(demo)
    app.add_typer(daemon_app, name="daemon", rich_help_panel=TOOLS_PANEL)


_register_tools()


def main() -> None:
    """Entry point: the daemon runs the command when one is up and asked for (see
    ``daemon/client.py``), else it runs here."""
    import sys

    from cnnvis_cli.daemon.client import delegate

    delegate(sys.argv)  # strips --daemon/--no-daemon; exits if the daemon ran the command
    app()

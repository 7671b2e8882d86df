"""``cnnvis daemon start | status | stop``: the Typer sub-app (registered in ``cnnvis_cli.cli``)."""

from __future__ import annotations

from typing import Annotated

import typer

daemon_app = typer.Typer(
    name="daemon",
    help="A warm background process that runs cnnvis commands without re-importing TensorFlow "
    "or reloading models. Send commands to it with [bold]--daemon[/bold] or "
    "[bold]CNNVIS_DAEMON=1[/bold] (without a daemon they run in-process; "
    "[bold]--no-daemon[/bold] forces that).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@daemon_app.command("start")
def start_command(
    idle_timeout: Annotated[
        str,
        typer.Option(
            "--idle-timeout", help="Exit after this long without a command: 90s, 15m, 2h; 0: never."
        ),
    ] = "15m",
    max_models: Annotated[
        int, typer.Option("--max-models", min=1, help="Models kept loaded (least recent go).")
    ] = 3,
    max_memory: Annotated[
        str,
        typer.Option(
            "--max-memory", help="Bound on the weights of the models kept: 512M, 4G; 0: none."
        ),
    ] = "4G",
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run in this terminal instead of detaching.")
    ] = False,
) -> None:
    """Start the daemon (unless one runs) and wait until it answers."""
    from cnnvis_cli.daemon import control

    try:
        idle = control.parse_duration(idle_timeout)
        memory = control.parse_size(max_memory)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(control.start(idle, max_models, memory, foreground=foreground))


@daemon_app.command("status")
def status_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Pid, uptime, memory, commands served and the models held; exit 1 when none runs."""
    from cnnvis_cli.daemon import control

    raise typer.Exit(control.status(as_json=json_output))


@daemon_app.command("stop")
def stop_command() -> None:
    """Stop the daemon (a running command is interrupted as by Ctrl-C)."""
    from cnnvis_cli.daemon import control

    raise typer.Exit(control.stop())

"""The `lenet-lab` command: parse, call the library, print, map errors to exit codes.

- app: the typer app; console: output, progress bars and tables; options: the options
  every command shares, one per spec field generated from the dataclasses;
- commands, each a thin call into the library: run (train, inspect, bench), sweeping
  (sweep, sweeps), database (studies, export, copy, dashboard), reports (report,
  activations).

A LabError or a usage error becomes one line `Error: ...` on stderr and a non-zero exit.
"""

from __future__ import annotations

import os
import sys

import typer

from lenet_lab.cli import database, reports, run, sweeping  # noqa: F401 (they register)
from lenet_lab.cli.app import app
from lenet_lab.cli.console import _Redacting, err, interrupted, visible
from lenet_lab.cli.options import optional_values
from lenet_lab.errors import LabError, quiet_library_warnings

__all__ = ["app", "main"]

# `lenet-lab --help` lists the commands in the order a user meets them.
ORDER = ("train", "inspect", "sweep", "sweeps", "studies", "export", "rerun", "copy",
         "report", "activations", "dashboard", "bench")
app.registered_commands.sort(key=lambda c: ORDER.index(c.name or c.callback.__name__))


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: one line per error, never a traceback for bad input."""
    quiet_library_warnings()
    args = optional_values(sys.argv[1:] if argv is None else argv)
    _Redacting.secrets = [*args, *(os.environ.get(f"LENET_LAB_{name}")
                                   for name in ("STORAGE", "MIRROR"))]
    command = typer.main.get_command(app)
    for sub in getattr(command, "commands", {}).values():  # docstrings wrap at the terminal's
        if sub.help:  # width, not at the source's line ends (rich keeps single newlines)
            sub.help = "\n\n".join(" ".join(p.split()) for p in sub.help.split("\n\n"))
    try:
        # Without standalone mode, click returns typer.Exit's code instead of exiting.
        code = command.main(args=args or ["--help"], prog_name="lenet-lab", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors: unknown option, bad value, ...
        ctx = getattr(exc, "ctx", None)
        path = ctx.command_path if ctx else "lenet-lab"
        err.print(f"Error: {visible(exc.format_message(), newlines=False)} (see '{path} --help')")
        return getattr(exc, "exit_code", 2)
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err.print("Aborted.")
        return 130
    except LabError as exc:
        err.print(f"Error: {visible(str(exc), newlines=False)}")
        return exc.exit_code
    except Exception as exc:
        from lenet_lab.store import database_error

        message = database_error(exc)
        if message is None:
            raise  # a bug: keep the traceback
        err.print(f"Error: {visible(message, newlines=False)}")
        return 1
    if code == 130 and not interrupted():
        err.print("Aborted.")
    return code if isinstance(code, int) else 0

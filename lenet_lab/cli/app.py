"""The typer app that every command module registers itself on."""

from __future__ import annotations

from typing import Annotated

import typer

from lenet_lab import __version__
from lenet_lab.cli.console import out

__all__ = ["app"]

app = typer.Typer(
    help="Answer the LeNet exercises of Dive into Deep Learning (6.6) with measured runs.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]})


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="print the version and exit")]
          = False) -> None:
    """Answer the LeNet exercises of Dive into Deep Learning (6.6) with measured runs."""
    if version:
        out.print(f"lenet-lab {__version__}")
        raise typer.Exit()

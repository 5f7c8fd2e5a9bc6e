"""The terminal: two consoles (out and err) that redact passwords, progress bars that show
only on a terminal, and borderless tables that fit its width."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lenet_lab.urls import redact

__all__ = ["bar", "err", "out", "print_table"]


class _Redacting(Console):
    """Text printed passes urls.redact, with the URLs of the options and environment (main)."""

    secrets: list[str | None] = []

    def print(self, *objects: Any, **options: Any) -> None:
        super().print(*(redact(o, *self.secrets) if isinstance(o, str) else o for o in objects),
                      **options)


# Piped output (scripts, logs) gets wide tables instead of rich's 80-column default,
# unless COLUMNS says how wide.
out = _Redacting(highlight=False, soft_wrap=True,
                 width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200)
err = _Redacting(stderr=True, highlight=False, soft_wrap=True, markup=False)


def bar(*columns: Any) -> Progress:
    """A progress display on stderr, shown only on a terminal and gone when done."""
    return Progress(*columns, console=err, transient=True, disable=not err.is_terminal)


def print_table(header: list[str], rows: list[list[str]], title: str | None = None, *,
                left: tuple[str, ...] = (), whole: tuple[str, ...] = ()) -> None:
    """A borderless table; columns named in `left` (and text columns) align left. A
    narrow terminal wraps the other columns, never the names in `whole`, which users
    type (study and sweep names)."""
    table = Table(*header, title=title, title_justify="left", box=None)
    for i, column in enumerate(table.columns):
        column.justify = "left" if column.header in left or not left else "right"
        column.overflow = "fold"  # wrap at spaces; fold only a word wider than the column
        if column.header in whole:
            column.no_wrap = True
            column.min_width = max((len(row[i]) for row in rows), default=0)
    for row in rows:
        table.add_row(*row)
    out.print(table)

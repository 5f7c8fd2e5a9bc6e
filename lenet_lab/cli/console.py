"""The terminal: two consoles (out and err) that redact passwords and show every control
character as text, progress bars that show only on a terminal, and borderless tables that
fit its width.

Names, titles and messages come from users and their files: an escape sequence in a
study name must not clear the screen or retitle the window, a right-to-left override
must not reorder a line, a newline must not split a table row or an error line. So every
string printed passes `visible`, and rich's markup is off (`[red]` is text).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from lenet_lab.urls import redact

__all__ = ["bar", "err", "interrupted", "out", "print_table", "visible"]

# C0 and C1 controls but tab and newline, zero-width and bidirectional marks, the BOM
_HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e"
                     "\u2066-\u2069\ufeff]")


def visible(text: str, *, newlines: bool = True) -> str:
    """`text` with every control character written out (`\x1b`, `\u202e`); with
    `newlines=False`, newlines and tabs too, for one-line places (cells, errors)."""
    text = _HIDDEN.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else
                       f"\\u{ord(m[0]):04x}", text)
    return text if newlines else text.replace("\n", "\\n").replace("\t", "\\t")


class _Redacting(Console):
    """Text printed passes urls.redact, with the URLs of the options and environment (main),
    and `visible`."""

    secrets: list[str | None] = []

    def print(self, *objects: Any, **options: Any) -> None:
        super().print(*(visible(redact(o, *self.secrets)) if isinstance(o, str) else o
                        for o in objects), **options)


def _width(stream) -> int | None:
    """COLUMNS when it is a sane width (rich takes COLUMNS=0 literally and prints
    nothing); else the terminal's, or for piped output (scripts, logs) 200: wide tables
    instead of rich's 80-column default."""
    given = os.environ.get("COLUMNS", "")
    if given.isascii() and given.isdigit() and int(given) >= MIN_WIDTH:
        return int(given)
    if stream.isatty():
        size = shutil.get_terminal_size(fallback=(80, 24)).columns
        return size if size >= MIN_WIDTH else 80
    return 200


MIN_WIDTH = 20  # narrower than this, no table or line is readable
out = _Redacting(highlight=False, soft_wrap=True, markup=False, width=_width(sys.stdout))
err = _Redacting(stderr=True, highlight=False, soft_wrap=True, markup=False,
                 width=_width(sys.stderr))


def interrupted(message: str | None = None) -> bool:
    """Say why a command stopped on Ctrl-C (with `message`); without one, whether that was
    said: main says "Aborted." for a command that stopped without a word (typer turns a
    KeyboardInterrupt into exit 130 silently)."""
    if message is not None:
        err.print(message)
        interrupted.said = True
    return interrupted.said


interrupted.said = False


def bar(*columns: Any) -> Progress:
    """A progress display on stderr, shown only on a terminal and gone when done."""
    return Progress(*columns, console=err, transient=True, disable=not err.is_terminal)


def print_table(header: list[str], rows: list[list[str]], title: str | None = None, *,
                left: tuple[str, ...] = (), whole: tuple[str, ...] = ()) -> None:
    """A borderless table; columns named in `left` (and text columns) align left. A
    narrow terminal wraps the other columns, never the names in `whole`, which users
    type (study and sweep names)."""
    table = Table(*header, title=title and visible(redact(title, *out.secrets), newlines=False),
                  title_justify="left", box=None)
    for i, column in enumerate(table.columns):
        column.justify = "left" if column.header in left or not left else "right"
        column.overflow = "fold"  # wrap at spaces; fold only a word wider than the column
        if column.header in whole:
            column.no_wrap = True
            column.min_width = max((len(visible(row[i], newlines=False)) for row in rows),
                                   default=0)
    for row in rows:
        table.add_row(*(visible(redact(cell, *out.secrets), newlines=False) for cell in row))
    out.print(table)

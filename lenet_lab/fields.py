"""How a spec or training field is written down: as text on the command line and in SQL
(width lists as "6,16", "none" for no layers), as an Optuna param (a scalar), and read
back into the value the spec takes, however it was stored. A field's kind (widths, int,
float, bool, choice, text) is read off its dataclass type, so a new field is typed
everywhere at once: command-line parsing, sweep-file distributions, SQL columns."""

from __future__ import annotations

from typing import Any

from lenet_lab.errors import SpecError
from lenet_lab.spec import CHOICES, SPEC_FIELDS

__all__ = ["field_kind", "field_param", "field_value", "format_widths", "from_options",
           "parse_widths"]


def format_widths(widths: tuple[int, ...] | list[int]) -> str:
    """(6, 16) -> "6,16"; () -> "none" (the text form on the command line and in SQL)."""
    return ",".join(map(str, widths)) or "none"


def parse_widths(text: str, name: str = "widths") -> tuple[int, ...]:
    """ "6,16" -> (6, 16); "none" or "" -> ()."""
    if str(text).strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise SpecError(f"{name}: {text!r} is not a comma-separated list of whole numbers "
                        f"(e.g. 6,16)") from None



_KINDS = {"tuple[int, ...]": "widths", "int": "int", "float": "float", "bool": "bool", "str": "text"}


def field_kind(name: str) -> str:
    """widths, int, float, bool, choice or text: read off the dataclass field's type."""
    kind = _KINDS[str(SPEC_FIELDS[name].type)]
    return "choice" if name in CHOICES else kind


def field_value(name: str, value: Any) -> Any:
    """A field's value as the spec takes it, however it was stored: numpy scalars
    unwrapped, SQLite's 0/1 as a bool, whole numbers that pandas read as floats as ints,
    width lists written as text ("6,16" in SQL and in Optuna's params) as tuples."""
    value = value.item() if hasattr(value, "item") else value
    kind = field_kind(name)
    if kind == "widths":
        return parse_widths(value, name) if isinstance(value, str) else tuple(value)
    if kind == "bool":
        return bool(value)
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def field_param(value: Any) -> Any:
    """A field's value as an Optuna param, which must be a scalar: widths as text."""
    return format_widths(value) if isinstance(value, (list, tuple)) else value


def from_options(cls: type, values: dict[str, Any]) -> Any:
    """A LeNetSpec or TrainConfig from command-line values: width lists come as text."""
    return cls(**{name: parse_widths(value, "--" + name.replace("_", "-"))
                  if field_kind(name) == "widths" and isinstance(value, str) else value
                  for name, value in values.items()})

"""Options shared by the commands: one per LeNetSpec and TrainConfig field, generated from
the dataclasses (`--conv-channels 6,16`), and the common ones (engine, device, storage,
data, subset, out)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Annotated, Any, Callable, Literal, Optional

import typer

from lenet_lab.engines import ENGINES
from lenet_lab.spec import CHOICES, LeNetSpec, TrainConfig
from lenet_lab.fields import field_kind, format_widths, from_options

__all__ = ["DataDir", "DeviceOpt", "Engine", "OutDir", "StorageOpt", "Subset",
           "UNTIL_DECIDED", "opt", "optional_values", "with_spec_options"]


def _option(field: dataclasses.Field, section: str) -> inspect.Parameter:
    """A typer option for one dataclass field, defaulting to the book's value."""
    flag, kind, default = "--" + field.name.replace("_", "-"), field_kind(field.name), field.default
    kinds = {"widths": str, "bool": bool, "choice": Literal[CHOICES.get(field.name, ("",))]}
    flags = (f"{flag}/--no-{flag[2:]}",) if kind == "bool" else (flag,)
    option = typer.Option(*flags, help=field.metadata["help"], rich_help_panel=section)
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                             default=format_widths(default) if kind == "widths" else default,
                             annotation=Annotated[kinds.get(kind, type(default)), option])


def opt(help: str, *flags: str, **options: Any) -> Any:
    """An option with no default shown (its default is None: the file's or the book's)."""
    # rich reads "[default: ...]" as markup and drops it: escape the bracket
    return typer.Option(*flags, help=help.replace("[", r"\["), show_default=False, **options)


def with_spec_options(*, training: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One option per LeNetSpec (and TrainConfig) field; the command gets `spec` (`config`)."""
    groups = [(LeNetSpec, "spec", "Network (LeNetSpec)")]
    if training:
        groups.append((TrainConfig, "config", "Training (TrainConfig)"))

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            for cls, argument, _ in groups:
                kwargs[argument] = from_options(
                    cls, {f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)})
            return command(**kwargs)

        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.name not in ("spec", "config")]
        added = [_option(f, section) for cls, _, section in groups for f in dataclasses.fields(cls)]
        wrapper.__signature__ = inspect.Signature(own + added)  # type: ignore[attr-defined]
        return wrapper

    return decorate


Engine = Annotated[Literal[ENGINES],  # type: ignore[valid-type]
                   typer.Option(help="framework: mxnet (the book's) or torch")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, gpu or gpu:N")]
DataDir = Annotated[Optional[str], opt("folder holding fashion-mnist/ and mnist/ "
                                       "[env LENET_LAB_DATA]")]
Subset = Annotated[Optional[int], opt("train on N examples and test on up to N, stratified by "
                                      "class (quick runs)", min=1)]
StorageOpt = Annotated[Optional[str], opt(
    "database URL [default: sqlite:///studies.db; env LENET_LAB_STORAGE]", "--storage")]
OutDir = Annotated[str, typer.Option("--out", help="folder for the HTML pages")]

UNTIL_DECIDED_MAX = 10  # `--until-decided` without a value
UNTIL_DECIDED = opt(f"add seeds to the control and the leading arm until the answer is decided, "
                    f"up to MAX seeds [MAX default: {UNTIL_DECIDED_MAX}]", "--until-decided",
                    metavar="[MAX]", min=1)


def optional_values(args: list[str]) -> list[str]:
    """`--until-decided` takes an optional value, which typer cannot express: give it the
    default where no number follows."""
    found = []
    for i, arg in enumerate(args):
        found.append(arg)
        number = i + 1 < len(args) and args[i + 1].isascii() and args[i + 1].isdigit()
        if arg == "--until-decided" and not number:
            found.append(str(UNTIL_DECIDED_MAX))
    return found

"""Reading sweep files: find one by name or path, parse its TOML, check every key.

Keys (README's "Sweep files" has an annotated example): `title`, `exercise`, `question`;
`[run]` (engine, epochs, seeds, sampler, sampler_seed, trials, objectives, prune, subset,
validation, confirm, until_decided, margin), every key of which the command line can override;
`[fixed]` (spec and training fields set for every arm); `[space]` (grid: lists; search:
lists or distributions such as `lr = { low = 0.01, high = 1.0, log = true }`) or
instead named `[[arms]]`. A file is wholly validated, naming file and key, before any
database is touched; every message says where the value stands (`<file>: [space] lr`)
and how to fix it.
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from lenet_lab.errors import InfeasibleSpec, SpecError, SweepError
from lenet_lab.spec import LeNetSpec, TrainConfig, check_fits_data
from lenet_lab.fields import field_kind
from lenet_lab.sweep_file.model import (FIELDS, NETWORK_FIELDS, NUMERIC, QUICK_KEYS, Arm,
                                        Distribution, RunSettings, Sweep, check_run, specs_from)

__all__ = ["bundled_dir", "find_sweep", "list_sweeps", "load_sweep", "load_sweeps", "parse_sweep"]

TOP_KEYS = {"title", "exercise", "question", "run", "quick", "fixed", "space", "arms"}


def unknown_key(where: str, key: str, known: set[str]) -> SweepError:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(sorted(known))}"
    return SweepError(f"{where}: unknown key {key!r}; {hint}")


def check_field_value(name: str, value: Any, where: str) -> Any:
    """One field value, checked on its own (infeasible shapes are left to the arms)."""
    if field_kind(name) == "widths":
        if not isinstance(value, list):
            raise SweepError(f"{where}: {name} takes a list of whole numbers such as [6, 16], "
                             f"not {value!r}")
        value = tuple(value)
    target = LeNetSpec if name in NETWORK_FIELDS else TrainConfig
    try:
        target(**{name: value})
    except InfeasibleSpec:
        pass
    except SpecError as exc:
        raise SweepError(f"{where}: {exc}") from None
    return value


def parse_dimension(key: str, value: Any, where: str) -> list[Any] | Distribution:
    if isinstance(value, list):
        if not value:
            raise SweepError(f"{where} is an empty list: give at least one value")
        values = [check_field_value(key, v, where) for v in value]
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:  # by value: 1 and 1.0 are one learning rate
            raise SweepError(f"{where} lists a value twice ({twice!r})")
        return values
    if isinstance(value, dict):
        allowed = {"low", "high", "log", "step"}
        for k in value:
            if k not in allowed:
                raise unknown_key(where, k, allowed)
        if key not in NUMERIC:
            raise SweepError(f"{where}: only numeric fields take a distribution; give a list "
                             f"of values instead")
        low, high = value.get("low"), value.get("high")
        integer = field_kind(key) == "int"
        for bound, number in (("low", low), ("high", high), ("step", value.get("step"))):
            if number is None and bound == "step":
                continue
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise SweepError(f"{where}: {bound} must be a number, not {number!r}")
            if not math.isfinite(number):
                raise SweepError(f"{where}: {bound} must be finite, not {number}")
            if integer and number != int(number):
                raise SweepError(f"{where}: {key} takes whole numbers: {bound} {number} is not one")
        if not low < high:
            raise SweepError(f"{where}: low ({low}) must be below high ({high})")
        log, step = value.get("log", False), value.get("step")
        if not isinstance(log, bool):
            raise SweepError(f"{where}: log must be true or false, not {log!r}")
        if log and low <= 0:
            raise SweepError(f"{where}: a log distribution needs low > 0, not {low}")
        if step is not None and (log or isinstance(step, bool) or not isinstance(step, (int, float))
                                 or step <= 0):
            raise SweepError(f"{where}: step must be a positive number and cannot go with log")
        if step is not None and step > high - low:
            raise SweepError(f"{where}: step {step} is larger than the range {low} to {high}, "
                             f"so the search could try only {low}: give a smaller step")
        for number in (low, high):
            check_field_value(key, int(number) if integer else float(number), where)
        return Distribution(float(low), float(high), log, step, integer)
    raise SweepError(f"{where} must be a list of values or a table such as "
                     f"{{ low = 0.01, high = 1.0, log = true }}, not {value!r}")


def bundled_dir() -> Path:
    """The sweep files that ship with lenet-lab.

    The wheel maps the repository's top-level `sweeps/` into the package as
    `lenet_lab.sweeps` (pyproject.toml); a source checkout reads `sweeps/` itself.
    """
    packaged = importlib.resources.files("lenet_lab") / "sweeps"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "sweeps"


def sweep_dirs() -> list[Path]:
    """./sweeps (your own) first, then the ones that ship with lenet-lab."""
    local, bundled = Path("sweeps").resolve(), bundled_dir().resolve()
    return [local] + ([bundled] if bundled != local else [])


def list_sweeps() -> list[Path]:
    found: dict[str, Path] = {}
    for directory in sweep_dirs():
        for path in sorted(directory.glob("*.toml")):
            found.setdefault(path.stem, path)
    return sorted(found.values(), key=lambda p: p.stem)


def load_sweeps() -> tuple[list[Sweep], list[str]]:
    """Every sweep that `lenet-lab sweep NAME` finds, in the book's exercise order, and one
    line for each file that cannot be used (listing goes on past a broken file)."""
    found, broken = [], []
    for path in list_sweeps():
        try:
            found.append(load_sweep(str(path)))
        except SweepError as exc:
            broken.append(str(exc))
    return sorted(found, key=lambda sweep: (sweep.exercise or 99, sweep.name)), broken


def find_sweep(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.parent != Path("."):
        if path.is_dir():
            raise SweepError(f"{path} is a folder, not a sweep file: give a .toml file")
        if not path.is_file():
            raise SweepError(f"sweep file {path} does not exist")
        return path
    for directory in sweep_dirs():
        candidate = directory / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    names = [p.stem for p in list_sweeps()]
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise SweepError(f"no sweep named {name_or_path!r}: {hint}known sweeps are "
                     f"{', '.join(names)} (`lenet-lab sweeps`), or give a path to a .toml file")


def load_sweep(name_or_path: str) -> Sweep:
    path = find_sweep(name_or_path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # editors that write a BOM are welcome
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise SweepError(f"{path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise SweepError(f"{path}: nested too deeply to be a sweep file") from None
    return parse_sweep(data, path=path, text=text)


def _check_best_of(where: str, index: int, best_of: str, own: str) -> None:
    """best_of names another sweep that `lenet-lab sweep` finds (exercise 9 takes 2's)."""
    if best_of == own:
        raise SweepError(f"{where}: [[arms]] #{index + 1} best_of names this sweep itself: "
                         f"name the sweep whose best network this arm takes, such as \"improve\"")
    names = [p.stem for p in list_sweeps()]
    if best_of not in names:
        close = difflib.get_close_matches(best_of, names, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise SweepError(f"{where}: [[arms]] #{index + 1} best_of {best_of!r} is no sweep: "
                         f"{hint}known sweeps are {', '.join(names)}")


def _no_nul(where: str, key: str, text: str | None) -> None:
    """NUL ends strings in C: PostgreSQL refuses it, and terminals drop what follows."""
    if text and "\x00" in text:
        raise SweepError(f"{where}: {key} holds a NUL character (\\x00): remove it")


def _table(data: dict, key: str, where: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SweepError(f"{where}: [{key}] must be a table, not {type(value).__name__}")
    return value


def parse_sweep(data: dict[str, Any], *, path: Path, text: str = "") -> Sweep:
    where = str(path)
    for key in data:
        if key not in TOP_KEYS:
            raise unknown_key(where, key, TOP_KEYS)
    title = data.get("title")
    if not isinstance(title, str) or not title.strip():
        raise SweepError(f"{where}: title is missing: give the exercise in the book's words, "
                         f'e.g. title = "Replace the average pooling with max pooling."')
    exercise = data.get("exercise")
    if exercise is not None and (not isinstance(exercise, int) or not 1 <= exercise <= 10):
        raise SweepError(f"{where}: exercise must be the book's exercise number, 1 to 10, "
                         f"not {exercise!r}")
    question = data.get("question")
    if question is not None and not isinstance(question, str):
        raise SweepError(f"{where}: question must be text, not {question!r}")
    _no_nul(where, "title", title)
    _no_nul(where, "question", question)

    run_table = _table(data, "run", where)
    run_keys = {f.name for f in fields(RunSettings)}
    for key in run_table:
        if key not in run_keys:
            raise unknown_key(f"{where}: [run]", key, run_keys)
    run_values = dict(run_table)
    if "objectives" in run_values and isinstance(run_values["objectives"], list):
        run_values["objectives"] = tuple(run_values["objectives"])
    run = RunSettings(**run_values)
    quick = dict(_table(data, "quick", where))
    for key in quick:
        if key not in QUICK_KEYS:
            raise unknown_key(f"{where}: [quick]", key, set(QUICK_KEYS))

    fixed = {}
    for key, value in _table(data, "fixed", where).items():
        if key not in FIELDS:
            raise unknown_key(f"{where}: [fixed]", key, FIELDS)
        fixed[key] = check_field_value(key, value, f"{where}: [fixed] {key}")

    space: dict[str, list[Any] | Distribution] = {}
    for key, value in _table(data, "space", where).items():
        if key not in FIELDS:
            raise unknown_key(f"{where}: [space]", key, FIELDS)
        space[key] = parse_dimension(key, value, f"{where}: [space] {key}")

    arms_data = data.get("arms", [])
    if not isinstance(arms_data, list) or not all(isinstance(a, dict) for a in arms_data):
        raise SweepError(f"{where}: arms must be a list of tables ([[arms]] sections)")
    arms = []
    for i, arm in enumerate(arms_data):
        values = {}
        for key, value in arm.items():
            if key in ("name", "best_of"):
                continue
            if key not in FIELDS:
                raise unknown_key(f"{where}: [[arms]] #{i + 1}", key, FIELDS | {"name", "best_of"})
            values[key] = check_field_value(key, value, f"{where}: [[arms]] #{i + 1} {key}")
        name = arm.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise SweepError(f"{where}: [[arms]] #{i + 1} name must be text, not {name!r}")
        _no_nul(where, f"[[arms]] #{i + 1} name", name)
        best_of = arm.get("best_of")
        if best_of is not None and (not isinstance(best_of, str) or not name):
            raise SweepError(f"{where}: [[arms]] #{i + 1} best_of must name a sweep, such as "
                             f'"improve", and the arm needs a name')
        if best_of is not None:
            _check_best_of(where, i, best_of, path.stem)
        if name is not None and name.strip() in [a.name.strip() for a in arms if a.name]:
            raise SweepError(f"{where}: [[arms]] #{i + 1} is named {name!r} as an arm before it: "
                             f"give each arm its own name")
        arms.append(Arm(tuple(sorted(values.items())), name=name, best_of=best_of))

    if arms and space:
        raise SweepError(f"{where}: give either [space] or [[arms]], not both")
    for key in sorted(set(fixed) & set(space)):  # the control is the book's with [fixed]
        raise SweepError(f"{where}: [fixed] {key} is also varied by [space], so the arm called "
                         f"the book's network would not be it: keep {key} in one of them")
    if not arms and not space:
        raise SweepError(f"{where}: nothing to sweep: add a [space] table such as "
                         f'pooling = ["avg", "max"], or [[arms]] sections')
    check_run(run, where, grid_has_arms=bool(arms))
    for table, given in (("[space]", space), ("[fixed]", fixed)):
        if "epochs" in given and (run.epochs is not None or "epochs" in quick):
            raise SweepError(f"{where}: {'[run]' if run.epochs is not None else '[quick]'} "
                             f"epochs and {table} epochs conflict: keep one")
    if run.sampler == "grid":
        for key, dimension in space.items():
            if isinstance(dimension, Distribution):
                raise SweepError(f"{where}: [space] {key} is a distribution, which the grid sampler "
                                 f"cannot enumerate: give a list of values or use sampler = \"tpe\"")
    elif arms:
        raise SweepError(f"{where}: [[arms]] need sampler = \"grid\"; searches take a [space]")

    name = path.stem
    sweep = Sweep(name=name, path=path, text=text, title=title.strip(), exercise=exercise,
                  question=question, run=run, fixed=fixed, space=space, arms=tuple(arms),
                  quick=quick)
    sweep.check_size(where)  # before a single arm is built
    sweep.with_budget("quick").check_size(f"{where}: [quick]")  # checked as [run]'s are
    try:  # the control arm must build: a fixed spec that cannot is the file's fault
        check_fits_data(*specs_from(sweep.control(), seed=0))
    except SpecError as exc:
        raise SweepError(f"{where}: [fixed] gives an impossible network: {exc}") from None
    _check_arms(sweep, where)
    return sweep


def _check_arms(sweep: Sweep, where: str) -> None:
    """Every grid arm distinct and one its data allows; every search list holds the control."""
    control = sweep.control()
    if sweep.run.sampler != "grid":
        for key, dimension in sweep.space.items():
            value = control[key]
            inside = (dimension.low <= value <= dimension.high
                      if isinstance(dimension, Distribution) else value in dimension)
            if not inside:
                raise SweepError(f"{where}: [space] {key} must include the book's value "
                                 f"{value!r}: a search runs the book's network as its control")
        return
    resolved = [{**control, **arm.as_dict()} for arm in sweep.arms]
    for i, values in enumerate(resolved):
        if values in resolved[:i]:
            raise SweepError(f"{where}: [[arms]] #{i + 1} is the same network as "
                             f"#{resolved.index(values) + 1}")
    for arm in sweep.grid_arms():
        try:
            check_fits_data(*specs_from({**control, **arm.as_dict()}, seed=0))
        except InfeasibleSpec:
            pass  # a result: recorded as infeasible when the arm runs
        except SpecError as exc:
            raise SweepError(f"{where}: arm {arm.label}: {exc}") from None



from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
import typer

from lenet_lab.cli import app, main
from tests.conftest import BOOK_SHAPES, ENGINES


def run(*args: str) -> subprocess.CompletedProcess:
    """The real command in a fresh process, as a user's shell runs it."""
    return subprocess.run([sys.executable, "-m", "lenet_lab", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("engine", ENGINES)
def test_inspect_prints_the_books_table(engine: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", "--engine", engine]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\s*(\w+)\s+(\([\d, ]+\))\s+([\d,]+)\s+([\d,]+)\s*$", out, re.M)
    assert [(name, shape) for name, shape, *_ in rows] == [(n, str(s)) for n, s in BOOK_SHAPES]
    assert [p for _, _, p, _ in rows] == ["156", "0", "2,416", "0", "48,120", "10,164", "850"]
    # FLOPs of one example's forward pass: a multiply-add is 2 (conv0: 6x28x28 outputs of a
    # 5x5 window, each 2x25 + 1 for the sigmoid); training is 3x the forward pass
    flops = [int(f.replace(",", "")) for *_, f in rows]
    assert flops[0] == 6 * 28 * 28 * (2 * 25 + 1) and flops[4] == 120 * (2 * 400 + 1)
    assert f"about {3 * sum(flops):,} FLOPs per example" in out


@pytest.mark.slow
def test_train_prints_epochs_and_the_books_closing_lines() -> None:
    done = run("train", "--engine", "torch", "--subset", "1000", "--epochs", "2",
               "--activation", "relu", "--optimizer", "adam", "--lr", "0.001")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"epoch  1/2  loss \d\.\d{3}, train acc \d\.\d{3}, test acc \d\.\d{3}  .*", lines[2])
    assert re.fullmatch(r"loss \d\.\d{3}, train acc \d\.\d{3}, test acc \d\.\d{3}", lines[-2])
    assert re.fullmatch(r"\d+\.\d examples/sec on cpu \(.+\)", lines[-1])
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--lr", "0"], "lr must be a number > 0 and at most 1e+12, not 0.0"),
    (["train", "--kernel-size", "abc"], "Invalid value for '--kernel-size'"),
    (["train", "--pooling", "mean"], "'mean' is not one of 'avg', 'max'"),
    (["train", "--conv-channels", "6,x"], "'6,x' is not a comma-separated list of whole numbers"),
    (["train", "--subset", "0"], "Invalid value for '--subset'"),
    (["train", "--subset", "3"], "--subset 3 is too small"),
    (["train", "--device", "tpu"], "device must be auto, cpu, gpu or gpu:N, not 'tpu'"),
    (["train", "--device", "gpu:7"], "sees no GPU, so gpu:7 is not available: use --device cpu"),
    (["train", "--engine", "jax"], "Invalid value for '--engine'"),
    (["train", "--no-such-option"], "No such option: --no-such-option"),
    (["inspect", "--conv-channels", "6,16,32"], "pool2 gets a 1x1 feature map"),
    (["inspect", "--kernel-size", "0"], "kernel_size must be a whole number >= 1, not 0"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["train", "--data-dir", "/nonexistent"], "--data-dir /nonexistent does not exist"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(args: list[str], message: str,
                                                  capsys: pytest.CaptureFixture) -> None:
    code = main(args)
    captured = capsys.readouterr()
    assert code != 0
    assert captured.err.count("\n") == 1 and captured.err.startswith("Error: "), captured.err
    assert message in captured.err


def test_missing_data_offline_is_one_line(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("LENET_LAB_DATA")  # and downloads go to a dead loopback port
    assert main(["train", "--engine", "torch", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: Fashion-MNIST not found (looked in ")


@pytest.mark.slow
def test_divergence_exits_with_status_3(capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "--engine", "torch", "--subset", "200", "--epochs", "2", "--lr", "1e9",
                 "--activation", "relu"])
    assert code == 3
    assert re.match(r"Diverged: diverged at epoch [12]: train loss is (nan|inf)", capsys.readouterr().err)


def test_errors_in_a_fresh_process_have_no_traceback() -> None:
    done = run("inspect", "--engine", "torch", "--conv-channels", "6,16,32")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("Error: pool2") and done.stderr.count("\n") == 1


COMMANDS = [command.name or command.callback.__name__ for command in app.registered_commands]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"Usage: lenet-lab {command}" in out and len(out.splitlines()) > 5
    # rich would read "[run]" in a help text as markup and drop it: every bracket survives
    words = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())
    click = typer.main.get_command(app).commands[command]
    for param in click.params:
        for bracketed in re.findall(r"\[[a-z]+\]", (getattr(param, "help", "") or "").replace("\\[", "[")):
            assert bracketed in words, (param.name, bracketed)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_paragraphs_fill_an_80_column_terminal(command: str, capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A docstring's line ends are not the terminal's: no paragraph line is cut short
    (rich kept them, so a 96-character source line became one full line and one word)."""
    monkeypatch.setenv("COLUMNS", "80")
    assert main([command, "--help"]) == 0
    description = capsys.readouterr().out.split("╭")[0].splitlines()[3:]
    for line, after in zip(description, description[1:]):
        assert not (line.strip() and after.strip()) or len(line.rstrip()) > 60, (line, after)


def test_spec_options_are_the_field_names_in_kebab_case(capsys: pytest.CaptureFixture) -> None:
    from lenet_lab.spec import LeNetSpec, TrainConfig
    main(["train", "--help"])
    out = capsys.readouterr().out
    for cls in (LeNetSpec, TrainConfig):
        for field in dataclasses.fields(cls):
            assert "--" + field.name.replace("_", "-") in out


def test_version_and_no_arguments(capsys: pytest.CaptureFixture) -> None:
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("lenet-lab ")
    assert main([]) == 0 and "Commands" in capsys.readouterr().out
    assert sorted(COMMANDS) == ["activations", "bench", "copy", "dashboard", "export", "inspect",
                                "report", "rerun", "studies", "sweep", "sweeps", "train"]

"""optuna-dashboard on our studies: grid trials carry their params, objectives their names."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lenet_lab.cli import main
from lenet_lab.sweep.plan import grid_choices
from lenet_lab.sweep_file import load_sweep
from tests.conftest import QUICK, lenet_lab


def test_grid_choices_are_the_values_that_vary_between_arms() -> None:
    assert grid_choices(load_sweep("pooling")) == {"pooling": ["avg", "max"]}
    layers = grid_choices(load_sweep("conv-layers"))
    assert layers == {"conv_channels": ["6,16", "6", "6,16,32"], "padding": ["first", "all"]}
    assert grid_choices(load_sweep("training")) == {}  # a search's params are its space


def test_dashboard_without_the_extra_or_studies_is_one_line(tmp_path: Path, monkeypatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["dashboard"]) == 1
    assert capsys.readouterr().err.startswith("Error: no studies in sqlite:///studies.db")
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed
    assert main(["dashboard"]) == 1
    err = capsys.readouterr().err
    assert err == 'Error: lenet-lab dashboard needs optuna-dashboard: pip install "lenet-lab[dashboard]"\n'
    assert not (tmp_path / "studies.db").exists()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.load(reply)


@pytest.mark.slow
def test_the_dashboard_lists_a_grid_studys_params_and_metric_names(tmp_path: Path) -> None:
    done = lenet_lab("sweep", "pooling", *QUICK, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = lenet_lab("dashboard", "--port", str(taken.getsockname()[1]), cwd=tmp_path)
    assert busy.returncode == 1 and busy.stdout == ""
    assert busy.stderr.endswith("(Address already in use): choose another --port, or a --host "
                                "of this machine\n")
    port = _free_port()
    server = lenet_lab("dashboard", "--port", str(port), cwd=tmp_path, wait=False)
    base = f"http://127.0.0.1:{port}/api"
    try:
        for _ in range(100):
            try:
                studies = _get(f"{base}/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                time.sleep(0.2)
        else:
            pytest.fail("optuna-dashboard did not answer within 20 s")
        study, = studies
        attrs = {a["key"]: a["value"] for a in study["user_attrs"]}
        assert study["study_name"] == "pooling-torch-e1-n500" and attrs["exercise"] == "1"
        assert attrs["title"] == "Replace the average pooling with max pooling. What happens?"
        detail = _get(f"{base}/studies/{study['study_id']}")
        assert detail["objective_names"] == ["test_acc"]
        params = sorted([(p["name"], p["param_external_value"]) for p in t["params"]]
                        for t in detail["trials"] if t["state"] == "Complete")
        assert params == [[("pooling", "avg")]] * 2 + [[("pooling", "max")]] * 2
        importances = _get(f"{base}/studies/{study['study_id']}/param_importances")
        assert importances["param_importances"][0][0]["name"] == "pooling"
    finally:
        server.terminate()
        server.wait(timeout=10)

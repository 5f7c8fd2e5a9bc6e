"""optuna-dashboard on our studies: grid trials carry their params, objectives their names."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from lenet_lab import store
from lenet_lab.cli import main
from lenet_lab.store import Database
from lenet_lab.sweep import plan_sweep, run_sweep
from lenet_lab.sweep.plan import grid_choices
from lenet_lab.sweep.queue import open_study
from lenet_lab.sweep_file import load_sweep
from tests.conftest import done, lenet_lab, plan_for, results


def test_grid_choices_are_the_values_that_vary_between_arms() -> None:
    assert grid_choices(load_sweep("pooling")) == {"pooling": ["avg", "max"]}
    layers = grid_choices(load_sweep("conv-layers"))
    assert layers == {"conv_channels": ["6,16", "6", "6,16,32"], "padding": ["first", "all"]}
    assert grid_choices(load_sweep("training")) == {}  # a search's params are its space


def _params(plan) -> list[tuple[str, dict]]:
    study = optuna.load_study(study_name=plan.study_name, storage=plan.db.url)
    return sorted((t.user_attrs["arm"], t.params) for t in study.trials)


def test_every_grid_trial_registers_its_own_arms_values_and_metric_names(tmp_path: Path,
                                                                          stand_in) -> None:
    sweep = load_sweep("channels").with_run(engine="torch", epochs=1, seeds=1, subset=200)
    plan = plan_sweep(sweep, Database(f"sqlite:///{tmp_path}/studies.db"), device="cpu")
    stand_in()
    run_sweep(plan)
    assert [(arm, params["conv_channels"]) for arm, params in _params(plan)] == [
        ("conv_channels=12,32", "12,32"), ("conv_channels=24,64", "24,64"),
        ("conv_channels=3,8", "3,8"), ("conv_channels=6,16", "6,16")]
    study = optuna.load_study(study_name=plan.study_name, storage=plan.db.url)
    assert study.metric_names == ["valid_acc", "examples_per_sec"]
    assert study.user_attrs["exercise"] == 4 and study.user_attrs["title"] == sweep.title


def test_a_grid_queued_before_params_registers_each_arms_own_value(tmp_path: Path,
                                                                   stand_in) -> None:
    plan = plan_for(tmp_path, seeds=1)
    open_study(plan)
    for trial_id in store.waiting_trial_ids(plan.db, plan.study_name):  # as 0.1 queued
        plan.db.optuna().set_trial_system_attr(trial_id, "fixed_params", {})
    stand_in()
    run_sweep(plan)  # the sampler would have drawn the values at random
    assert _params(plan) == [("pooling=avg", {"pooling": "avg"}), ("pooling=max", {"pooling": "max"})]


def test_a_grid_grown_after_its_study_began_runs_on_without_that_param(tmp_path: Path,
                                                                       stand_in) -> None:
    path = tmp_path / "act.toml"
    path.write_text('title = "activations"\n[run]\nsampler = "grid"\n[space]\nactivation = ["relu"]\n')
    plan = plan_for(tmp_path, str(path), seeds=1)
    stand_in()
    run_sweep(plan)
    path.write_text(path.read_text().replace('["relu"]', '["relu", "tanh"]'))
    run_sweep(plan_for(tmp_path, str(path), seeds=1))
    assert _params(plan) == [("activation=relu", {"activation": "relu"}),
                             ("activation=tanh", {}),  # Optuna keeps a param's first choices
                             ("book", {"activation": "sigmoid"})]
    assert done(results(tmp_path)) == [("activation=relu", 0), ("activation=tanh", 0), ("book", 0)]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def test_the_dashboards_storage_cannot_delete_a_study(kind: str, request, tmp_path: Path,
                                                      stand_in) -> None:
    url = request.getfixturevalue("pg").new_database("dashboard") if kind == "postgres" \
        else f"sqlite:///{tmp_path}/studies.db"
    sweep = load_sweep("pooling").with_run(engine="torch", epochs=1, seeds=1, subset=200)
    plan = plan_sweep(sweep, Database(url), device="cpu")
    stand_in()
    run_sweep(plan)
    reader = Database(url, read_only=True).optuna()  # what `lenet-lab dashboard` serves
    with pytest.raises(optuna.exceptions.StorageInternalError):  # the page's delete button
        reader.delete_study(reader.get_study_id_from_name(plan.study_name))
    assert optuna.get_all_study_names(url) == [plan.study_name]


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
    done = lenet_lab("sweep", "pooling", "--engine", "torch", "--subset", "300", "--epochs", "1",
                     "--seeds", "1", "-q", cwd=tmp_path)
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
        assert study["study_name"] == "pooling-torch-e1-n300" and attrs["exercise"] == "1"
        assert attrs["title"] == "Replace the average pooling with max pooling. What happens?"
        detail = _get(f"{base}/studies/{study['study_id']}")
        assert detail["objective_names"] == ["valid_acc"]
        params = sorted([(p["name"], p["param_external_value"]) for p in t["params"]]
                        for t in detail["trials"] if t["state"] == "Complete")
        assert params == [[("pooling", "avg")], [("pooling", "max")]]
        # one seed per arm: Optuna warns that importances rest on too few trials
        importances = _get(f"{base}/studies/{study['study_id']}/param_importances")
        assert importances["param_importances"][0][0]["name"] == "pooling"
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    assert out == f"optuna-dashboard on sqlite:///studies.db: open http://127.0.0.1:{port}/ " \
                  f"(Ctrl-C stops it)\n"
    assert err == ""  # no server banner, no line per request, no library warnings

"""How long `lenet-lab report` takes for a study of 1,000 trials (synthetic rows).

    python benchmarks/report_1000.py [--trials 1000] [--epochs 10]

Builds a throwaway SQLite database with one grid-like study (20 arms), per-epoch rows
for every trial, then times build_report() on it, activations off (synthetic trials
have no weights). Prints one line with the seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy as sa

from lenet_lab import store
from lenet_lab.report import build_report
from lenet_lab.spec import LeNetSpec, TrainConfig
from lenet_lab.store import schema


def synthetic_study(db: store.Database, trials: int, epochs: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=db.optuna(), study_name="synthetic", direction="maximize")
    store.ensure_schema(db)
    store.record_study(db, {
        "study_name": "synthetic", "sweep": "kernel", "title": "Synthetic: 1,000 trials",
        "exercise": 3, "sweep_file": "", "sweep_sha256": "0" * 64, "engine": "torch",
        "engine_version": "-", "device": "cpu", "device_name": "-",
        "sampler": json.dumps({"sampler": "grid"}), "settings": json.dumps({"sampler": "grid"}),
        "packages": "{}", "command": "benchmarks/report_1000.py"})
    rng = np.random.default_rng(0)
    trial_rows, epoch_rows = [], []
    for number in range(trials):
        trial = study.ask()
        arm = number % 20
        spec, config = LeNetSpec(kernel_size=1 + arm % 9), TrainConfig(seed=number // 20)
        accuracy = 0.8 + 0.005 * arm + rng.normal(0, 0.01)
        study.tell(trial, accuracy)
        columns = store.trial_columns({}, spec, config)
        trial_rows.append({
            "trial_id": trial._trial_id, "study_name": "synthetic", "number": number,
            "arm": f"arm {arm}", "is_control": arm == 0, "engine": "torch", "device": "cpu",
            "status": "complete", "train_loss": 0.4, "train_acc": accuracy + 0.01,
            "test_acc": accuracy, "examples_per_sec": 7000 + rng.normal(0, 300), "epochs_done": epochs,
            "seconds": 80.0, **columns})
        epoch_rows += [{"trial_id": trial._trial_id, "epoch": e, "train_loss": 2.3 / e,
                        "train_acc": accuracy * e / epochs, "test_acc": accuracy * e / epochs,
                        "examples_per_sec": 7000.0, "seconds": 8.0} for e in range(1, epochs + 1)]
    with db.transaction() as conn:
        conn.execute(sa.insert(schema.lab_trials), trial_rows)
        conn.execute(sa.insert(schema.lab_epochs), epoch_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/studies.db"
        with store.Database(url) as db:
            synthetic_study(db, args.trials, args.epochs)
        start = time.perf_counter()
        with store.Database(url, read_only=True) as db:
            index = build_report(db, out=Path(folder) / "reports", activations=False)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in index.parent.glob("study-*.html"))
    print(f"report for {args.trials} trials x {args.epochs} epochs: {seconds:.2f} s "
          f"(study page {size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# GPU check for the torch engine, one table at the end:
#   - `lenet-lab bench`: a single trial eager, compiled and graphed (CUDA graphs), and K
#     trials fused into one model for K in FUSE (eager and graphed);
#   - the same short real sweep with 1, 2, 4 and 8 workers sharing the GPU;
#   - the pooling sweep at full budget (6 trials x 10 epochs, full data), fused and not;
#   - the predicted wall time of all nine sweeps at full budget, from those rates.
#
# Needs: python3 with torch (CUDA build), numpy, pandas, typer and rich (the NVIDIA images
# we use have these), plus optuna, sqlalchemy and plotly (and their needs alembic, mako,
# colorlog, narwhals), and the real Fashion-MNIST files. Where pip cannot reach an index,
# put wheels in a folder and name it in WHEELS; they are installed into a private folder.
#
#   LENET_LAB_DATA=/path/holding/fashion-mnist WHEELS=/path/to/wheels scripts/gpu-check.sh
#
# Knobs: DEVICE (gpu), EPOCHS (bench epochs, 5), SUBSET (sweep examples, 10000),
# SWEEP_EPOCHS (2), JOBS ("1 2 4 8"), FUSE (1,3,6,12,24), MODES ("compile graphs"), FULL
# (1: run the full pooling sweep), OUT (where the JSON and logs go; a temp folder). A
# smoke run on a CPU: DEVICE=cpu MODES= FULL=0 EPOCHS=1 SUBSET=500 SUBSET_BENCH=500
# SWEEP_EPOCHS=1 JOBS=1 FUSE=1,2 (SUBSET_BENCH: examples per bench epoch; default all).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LENET_LAB_DATA:?set LENET_LAB_DATA to a folder holding fashion-mnist/}"
DEVICE=${DEVICE:-gpu}
EPOCHS=${EPOCHS:-5}
SUBSET=${SUBSET:-10000}
SWEEP_EPOCHS=${SWEEP_EPOCHS:-2}
JOBS=${JOBS:-"1 2 4 8"}
FUSE=${FUSE:-1,3,6,12,24}
FULL=${FULL:-1}
MODES=${MODES-"compile graphs"}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$OUT/site" "$WHEELS"/*.whl
  export PYTHONPATH="$OUT/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 - <<'PY'
import importlib, sys
missing = [m for m in ("torch", "numpy", "pandas", "typer", "rich", "optuna", "sqlalchemy", "plotly")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu-check: missing {', '.join(missing)}: pip install them, or put their wheels "
             f"(and alembic, mako, colorlog, narwhals for optuna and plotly) in a folder and "
             f"set WHEELS to it")
PY

lab() { python3 -m lenet_lab "$@"; }
mode_args=()
for mode in $MODES; do mode_args+=(--mode "$mode"); done
lab bench --engine torch --device "$DEVICE" --epochs "$EPOCHS" ${SUBSET_BENCH:+--subset "$SUBSET_BENCH"} \
    "${mode_args[@]}" --fuse "$FUSE" --json > "$OUT/bench.json"

# Several trials per GPU: the same grid (pooling x 8 seeds) with more and more workers.
for jobs in $JOBS; do
  start=$(date +%s.%N)
  lab sweep pooling --engine torch --device "$DEVICE" --subset "$SUBSET" --epochs "$SWEEP_EPOCHS" \
      --seeds 8 --jobs "$jobs" --storage "sqlite:///$OUT/jobs-$jobs.db" --quiet > "$OUT/sweep-$jobs.log"
  echo "$jobs $start $(date +%s.%N)" >> "$OUT/jobs.txt"
done

# The full pooling sweep (the book's budget), each trial alone and fused per arm.
if [ "$FULL" = 1 ]; then
  for fuse in off auto; do
    start=$(date +%s.%N)
    lab sweep pooling --engine torch --device "$DEVICE" --fuse "$fuse" \
        --storage "sqlite:///$OUT/full-$fuse.db" --quiet > "$OUT/full-$fuse.log"
    echo "$fuse $start $(date +%s.%N)" >> "$OUT/full.txt"
  done
fi

python3 - "$OUT" "$SUBSET" "$SWEEP_EPOCHS" <<'PY'
import json, os, sqlite3, sys
out, subset, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bench = json.load(open(f"{out}/bench.json"))
print(f"lenet-lab GPU check: torch {bench['engine_version']} on {bench['device']} "
      f"({bench['device_name']}), batch {bench['batch_size']}")
print(f"{'path':<34}{'examples/sec (median)':>24}{'warm-up s':>12}")
for path in bench["paths"]:
    warm = ", ".join(f"{s:.1f}" for s in path["warmup_seconds"]) or "-"
    print(f"{path['path']:<34}{path['median_examples_per_sec']:>24,.0f}{warm:>12}")
print(f"ratio lenet-lab / reference: {bench['ratio']:.2f}")
print(f"{'workers':<10}{'trials':>8}{'wall s':>10}{'total examples/sec':>22}{'per trial':>12}")
for line in open(f"{out}/jobs.txt"):
    jobs, start, end = line.split()
    db = sqlite3.connect(f"{out}/jobs-{jobs}.db")
    trials, speed = db.execute("SELECT count(*), avg(examples_per_sec) FROM lab_results "
                               "WHERE state = 'complete'").fetchone()
    wall = float(end) - float(start)
    print(f"{jobs:<10}{trials:>8}{wall:>10.1f}{trials * subset * epochs / wall:>22,.0f}{speed:>12,.0f}")
if os.path.exists(f"{out}/full.txt"):
    print(f"{'pooling, full budget':<24}{'fuse':>8}{'wall s':>10}")
    for line in open(f"{out}/full.txt"):
        fuse, start, end = line.split()
        print(f"{'':<24}{fuse:>8}{float(end) - float(start):>10.1f}")
# All nine sweeps at full budget: their trials x 10 epochs x 60,000 examples at the best
# fused rate measured above (the book's network; wider ones run slower).
best = max(p["median_examples_per_sec"] for p in bench["paths"])
from lenet_lab.sweep_file import load_sweeps
trials = sum(sweep.expected_trials() for sweep in load_sweeps()[0])
print(f"predicted wall time, all nine sweeps ({trials} trials of 10 epochs) at "
      f"{best:,.0f} examples/sec: {trials * 10 * 60000 / best / 60:.1f} min")
PY
echo "details in $OUT"

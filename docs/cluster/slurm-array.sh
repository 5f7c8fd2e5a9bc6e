#!/bin/bash
# Workers of one lenet-lab study as a Slurm job array, for clusters where the login node
# has no Python to run `lenet-lab sweep ... --launch slurm` (docs/cluster.md).
#
#   sbatch --array=1-8 docs/cluster/slurm-array.sh
#
# Each array task is one worker: it joins the study, claims queued trials until none is
# left, and exits. Open the study once first, from any machine that reaches the database:
#   lenet-lab sweep improve --engine torch --plan     (checks everything, writes nothing)
# The storage URL comes from a file only you can read, never from the command line:
#   printf '%s' 'postgresql+psycopg://lab:PASSWORD@dbhost/lenet' > ~/.lenet-lab-storage
#   chmod 600 ~/.lenet-lab-storage
#SBATCH --job-name=lenet-lab-improve
#SBATCH --partition=gpu
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=4
#SBATCH --time=120
#SBATCH --output=lenet-lab-jobs/%A_%a.out
set -euo pipefail
export LENET_LAB_STORAGE="$(cat ~/.lenet-lab-storage)"
export LENET_LAB_DATA="${LENET_LAB_DATA:-$HOME/datasets}"  # holds fashion-mnist/ and mnist/
source "${LENET_LAB_VENV:-$HOME/lenet-lab-venv}/bin/activate"
lenet-lab sweep improve --study improve-torch --budget full --engine torch --jobs auto --fuse auto --device auto -q

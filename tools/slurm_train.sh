#!/usr/bin/env bash
# Train on a Slurm cluster (variables: see tools/slurm_launch.sh).
# Usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
exec bash "$(dirname "$0")/slurm_launch.sh" "$(dirname "$0")/train.py" \
    "$1" "$2" "$3" --work-dir="$4" "${@:5}"

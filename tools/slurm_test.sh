#!/usr/bin/env bash
# Test a checkpoint on a Slurm cluster, every sub-network as tools/test.py
# (variables: see tools/slurm_launch.sh).
# Usage: tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
exec bash "$(dirname "$0")/slurm_launch.sh" "$(dirname "$0")/test.py" "$@"

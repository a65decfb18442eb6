#!/usr/bin/env bash
# Run a tool on a Slurm cluster, one task per process (srun sets the ranks).
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [GRES=...] [SRUN_ARGS=...] \
#     tools/slurm_launch.sh TOOL PARTITION JOB_NAME [tool args]
# GPUS is the number of processes over all nodes, GPUS_PER_NODE per node.
# On CPU nodes set GRES=none: the tools then start a gloo group themselves.
# tools/slurm_train.sh and tools/slurm_test.sh are the usual entries.
set -x

TOOL=$1
PARTITION=$2
JOB_NAME=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
GRES=${GRES:-gpu:${GPUS_PER_NODE}}
PYTHON=${PYTHON:-python}

# SRUN_ARGS is split into words on purpose (extra srun options)
# shellcheck disable=SC2086
PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres="$GRES" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$TOOL" "${@:4}" --launcher=slurm

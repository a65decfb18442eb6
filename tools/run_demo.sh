#!/usr/bin/env bash
# The main job on the embedded digits data: set-up (idempotent), Stage I
# supernet training, then BN recalibration and the per-sub-network table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
WORK_DIR=${WORK_DIR:-work_dirs/ds_mbnet_digits}
exec .venv/bin/python tools/train.py configs/ds_mbnet_digits.py \
    --work-dir "$WORK_DIR" "$@"

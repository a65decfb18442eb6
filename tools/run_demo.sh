#!/usr/bin/env bash
# The main job on the embedded digits data: set-up (idempotent), then
#   1. Stage I supernet training (sandwich rule + IB), per-sub-network table;
#   2. BN recalibration of every sub-network;
#   3. Stage II gate training (SGS) from the recalibrated supernet;
#   4. evaluation of every static sub-network and of the dynamic model, with
#      report.md and accuracy_vs_madds.png written to the Stage II work dir.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
PY=.venv/bin/python
WORK_DIR=${WORK_DIR:-work_dirs/ds_mbnet_digits}

echo "== Stage I: supernet training =="
$PY tools/train.py configs/ds_mbnet_digits.py --work-dir "$WORK_DIR/stage1" "$@"
echo "== BN recalibration =="
$PY tools/calibrate_bn.py configs/ds_mbnet_digits.py \
    "$(cat "$WORK_DIR/stage1/last_checkpoint")" \
    --out "$WORK_DIR/stage1/calibrated.pth" --num-batches 10
echo "== Stage II: gate training (SGS) and evaluation =="
$PY tools/train.py configs/ds_mbnet_digits_gate.py \
    --work-dir "$WORK_DIR/stage2" \
    --cfg-options "model.stage1_checkpoint=$WORK_DIR/stage1/calibrated.pth"
echo "Report: $WORK_DIR/stage2/report.md, $WORK_DIR/stage2/accuracy_vs_madds.png"

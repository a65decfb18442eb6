#!/usr/bin/env bash
# The main job on the embedded graded digits (the UCI digits at four levels
# of difficulty, see dsnet_mm/datasets/graded_digits.py): set-up (idempotent),
# then
#   1. Stage I supernet training (sandwich rule + IB), per-sub-network table;
#   2. BN recalibration of every sub-network;
#   3. Stage II gate training (SGS) from the recalibrated supernet;
#   4. evaluation of every static sub-network and of the dynamic model, per
#      difficulty level too, with report.md, accuracy_vs_madds.png and
#      routing_by_level.png written to the Stage II work dir.
# SEED (default 0) seeds both stages; extra arguments go to both trainings.
source "$(dirname "$0")/demo_env.sh"
WORK_DIR=${WORK_DIR:-work_dirs/ds_mbnet_graded_digits}
STAGE1=configs/ds_mbnet_graded_digits.py
STAGE2=configs/ds_mbnet_graded_digits_gate.py

echo "== Stage I: supernet training (seed $SEED) =="
$PY tools/train.py $STAGE1 --work-dir "$WORK_DIR/stage1" \
    --cfg-options randomness.seed="$SEED" "$@"
echo "== BN recalibration =="
$PY tools/calibrate_bn.py $STAGE1 "$(cat "$WORK_DIR/stage1/last_checkpoint")" \
    --out "$WORK_DIR/stage1/calibrated.pth" --num-batches 10
echo "== Stage II: gate training (SGS) and evaluation =="
$PY tools/train.py $STAGE2 --work-dir "$WORK_DIR/stage2" \
    --cfg-options randomness.seed="$SEED" \
    "model.stage1_checkpoint=$WORK_DIR/stage1/calibrated.pth" "$@"
echo "Report: $WORK_DIR/stage2/report.md, $WORK_DIR/stage2/accuracy_vs_madds.png," \
    "$WORK_DIR/stage2/routing_by_level.png"

#!/usr/bin/env bash
# The DS-ViT demo (DS-Net++'s DS-ViT++) on the embedded graded digits:
# set-up (idempotent), then
#   1. Stage I of the supernet (sandwich + IB, dynamic idle slicing) without
#      MvCo, per-sub-network table;
#   2. the same Stage I with MvCo (two views, view-averaged EMA teacher):
#      same seed, schedule and iterations;
#   3. the comparison of the two (top-1 per sub-network, one plot);
#   4. Stage II from the MvCo supernet: the gate after block 1 routes each
#      image among the 4 sub-networks; dynamic row, routing per level,
#      report.md, accuracy_vs_madds.png and routing_by_level.png.
# SEED (default 0) seeds every stage.
source "$(dirname "$0")/demo_env.sh"
WORK_DIR=${WORK_DIR:-work_dirs/ds_vit_graded_digits}
SEED_OPT="randomness.seed=$SEED"

echo "== 1. Stage I without MvCo (seed $SEED) =="
$PY tools/train.py configs/ds_vit_graded_digits.py \
    --work-dir "$WORK_DIR/plain" --cfg-options "$SEED_OPT"
echo "== 2. Stage I with MvCo =="
$PY tools/train.py configs/ds_vit_graded_digits_mvco.py \
    --work-dir "$WORK_DIR/mvco" --cfg-options "$SEED_OPT"
echo "== 3. MvCo against no MvCo, per sub-network =="
$PY tools/analysis/compare_subnets.py "$WORK_DIR/mvco/subnet_results.json" \
    "$WORK_DIR/plain/subnet_results.json" --out "$WORK_DIR/comparison" \
    --labels MvCo "no MvCo" --num-images 1440 \
    --title "DS-ViT Stage I with and without MvCo (graded digits, seed $SEED)"
echo "== 4. Stage II (gate) from the MvCo supernet =="
$PY tools/train.py configs/ds_vit_graded_digits_gate.py \
    --work-dir "$WORK_DIR/gate" --cfg-options "$SEED_OPT" \
    "model.stage1_checkpoint=$(cat "$WORK_DIR/mvco/last_checkpoint")"
echo "Stage I: $WORK_DIR/comparison/comparison.md;" \
    "gate: $WORK_DIR/gate/report.md"

#!/usr/bin/env bash
# The progressive sub-network search demo (docs/search.md) on the graded
# digits: set-up (idempotent), then
#   1. base training of the widest DS-MobileNetV1 with trainable ranking
#      noise, channel reordering, the greedy search with selective
#      fine-tuning and re-selection (tools/search_subnets.py);
#   2. Stage I over the searched list and with US-Net sampling, same recipe
#      and iterations, one label-loss rule (none), each evaluated per
#      sub-network (tools/analysis/compare_search.py prepare);
#   3. the comparison report (top-1 gap at matched MAdds; one seed: no
#      interval; tools/run_search_comparison.sh runs several);
#   4. BN recalibration and Stage II over the searched list: the gate routes
#      among searched non-uniform sub-networks.
# SEED (default 0) seeds the search and all trainings.
source "$(dirname "$0")/demo_env.sh"
WORK_DIR=${WORK_DIR:-work_dirs/search_graded_digits_seed$SEED}
SEED_OPT="randomness.seed=$SEED"

echo "== 1. search (seed $SEED) =="
$PY tools/search_subnets.py configs/search/ds_mbnet_graded_digits_search.py \
    --work-dir "$WORK_DIR/search" --seed "$SEED" \
    --gate-config configs/ds_mbnet_graded_digits_gate.py
$PY tools/analysis/compare_search.py prepare \
    configs/search/ds_mbnet_graded_digits_search.py \
    --out "$WORK_DIR/configs" --search-dir "$WORK_DIR/search" \
    --arms searched usnet --baseline usnet
for arm in searched usnet; do
    echo "== 2. Stage I: $arm =="
    $PY tools/train.py "$WORK_DIR/configs/$arm.py" \
        --work-dir "$WORK_DIR/seed$SEED/$arm" --cfg-options "$SEED_OPT"
done
echo "== 3. comparison =="
$PY tools/analysis/compare_search.py report "$WORK_DIR" --seeds "$SEED" \
    --arms searched usnet --baseline usnet --out "$WORK_DIR/comparison" \
    --title "Searched vs US-Net (graded digits, seed $SEED)"
echo "== 4. Stage II over the searched list =="
$PY tools/calibrate_bn.py "$WORK_DIR/search/searched.py" \
    "$(cat "$WORK_DIR/seed$SEED/searched/last_checkpoint")" \
    --out "$WORK_DIR/seed$SEED/searched/calibrated.pth" --num-batches 40
# half the main job's Stage II schedule (3 epochs), to finish in 20 minutes
$PY tools/train.py "$WORK_DIR/search/searched_gate.py" \
    --work-dir "$WORK_DIR/searched_gate" --cfg-options "$SEED_OPT" \
    "model.stage1_checkpoint=$WORK_DIR/seed$SEED/searched/calibrated.pth" \
    train_cfg.max_epochs=3 train_cfg.val_interval=3 \
    param_scheduler.0.T_max=3 param_scheduler.0.end=3
echo "Search: $WORK_DIR/search/trajectory.png;" \
    "comparison: $WORK_DIR/comparison/comparison.md;" \
    "gate: $WORK_DIR/searched_gate/report.md"

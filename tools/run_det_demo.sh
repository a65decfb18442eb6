#!/usr/bin/env bash
# The detection demo on the embedded digits-VOC set (real UCI digits at four
# difficulty levels pasted on 128 px canvases, mmdet's VOC layout, see
# dsnet_mm/datasets/digits_voc.py): set-up (idempotent), then
#   1. the classification supernet that initialises the detector's backbone:
#      the main job's Stage I on the graded digits
#      (configs/ds_mbnet_graded_digits.py) and its BN recalibration;
#   2. detection Stage I: SSD over the DS-MobileNetV1, sandwich rule on the
#      detection losses (configs/det/ssd_ds-mbnet_digits_voc.py), BN
#      recalibration of every sub-network;
#   3. detection Stage II: the gate trained by detection SGS, the supernet
#      frozen (configs/det/ssd_ds-mbnet_digits_voc_sgs.py);
#   4. evaluation (tools/test.py): VOC mAP and MAdds per image of every static
#      sub-network and of the routed detector (mean MAdds, routing histogram,
#      per difficulty level), report.md and the plots in the test work dir.
# SEED (default 0) seeds every stage; extra arguments go to every training.
source "$(dirname "$0")/demo_env.sh"
WORK_DIR=${WORK_DIR:-work_dirs/ds_det_digits}
CLS=configs/ds_mbnet_graded_digits.py
DET=configs/det/ssd_ds-mbnet_digits_voc.py
SGS=configs/det/ssd_ds-mbnet_digits_voc_sgs.py
start=$(date +%s)
elapsed() { echo "[$(( $(date +%s) - start )) s]"; }

echo "== 1. classification supernet on the graded digits (seed $SEED) $(elapsed) =="
$PY tools/train.py $CLS --work-dir "$WORK_DIR/cls" --no-validate \
    --cfg-options randomness.seed="$SEED" "$@"
$PY tools/calibrate_bn.py $CLS "$(cat "$WORK_DIR/cls/last_checkpoint")" \
    --out "$WORK_DIR/cls/calibrated.pth" --num-batches 10

echo "== 2. detection Stage I: the sandwich rule on SSD $(elapsed) =="
$PY tools/train.py $DET --work-dir "$WORK_DIR/stage1" --no-validate \
    --cfg-options randomness.seed="$SEED" \
    "model.backbone.init_cfg.checkpoint=$WORK_DIR/cls/calibrated.pth" "$@"
$PY tools/calibrate_bn.py $DET "$(cat "$WORK_DIR/stage1/last_checkpoint")" \
    --out "$WORK_DIR/stage1/calibrated.pth" --num-batches 20 \
    --cfg-options model.backbone.init_cfg=None

echo "== 3. detection Stage II: the gate by detection SGS $(elapsed) =="
$PY tools/train.py $SGS --work-dir "$WORK_DIR/stage2" --no-validate \
    --cfg-options randomness.seed="$SEED" \
    "model.stage1_checkpoint=$WORK_DIR/stage1/calibrated.pth" "$@"

echo "== 4. every sub-network and the routed detector on the test split $(elapsed) =="
$PY tools/test.py $SGS "$(cat "$WORK_DIR/stage2/last_checkpoint")" \
    --work-dir "$WORK_DIR/test" --out "$WORK_DIR/test/metrics.json" \
    --cfg-options model.stage1_checkpoint=None
echo "Done $(elapsed). Report: $WORK_DIR/test/report.md," \
    "$WORK_DIR/test/accuracy_vs_madds.png, $WORK_DIR/test/routing_by_level.png"

# DS-MobileNetV1 Stage II on the graded digits (the main job's data, see
# configs/_base_/graded_digits.py): the gate learns to route each image
# within the ladder by SGS, starting from the recalibrated Stage I supernet
# of configs/ds_mbnet_graded_digits.py. Gate, schedule and loops are the
# plain digits demo's (configs/ds_mbnet_digits_gate.py) except where said.
_base_ = ['./ds_mbnet_digits_gate.py', './_base_/graded_digits.py']

model = dict(
    backbone=dict(subnets=_base_.graded_subnets, gate=_base_.graded_gate),
    # written by tools/calibrate_bn.py in the main job (tools/run_demo.sh)
    stage1_checkpoint='work_dirs/ds_mbnet_graded_digits/stage1/'
    'calibrated.pth')
train_dataloader = _base_.graded_train_dataloader
val_dataloader = _base_.graded_val_dataloader
test_dataloader = val_dataloader
val_evaluator = [*_base_.graded_evaluator, dict(type='RoutingMetric')]
test_evaluator = val_evaluator

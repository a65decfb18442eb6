# DS-MobileNetV1 Stage I on the graded digits (the demo's data, see
# configs/_base_/graded_digits.py). Model, sandwich/IB recipe, hooks and
# runtime are the plain digits demo's (configs/ds_mbnet_digits.py) except
# where said.
_base_ = ['./ds_mbnet_digits.py', './_base_/graded_digits.py']

model = dict(
    backbone=dict(subnets=_base_.graded_subnets),
    # the random widths up to subnet_6, the narrow end of the gate's window,
    # learn from the labels as well as from the teacher; the smallest and
    # the widths above subnet_6 from the teacher alone (the paper's IB);
    # see graded_student_label_weight in configs/_base_/graded_digits.py
    student_label_weight=_base_.graded_student_label_weight)
train_dataloader = _base_.graded_train_dataloader
val_dataloader = _base_.graded_val_dataloader
test_dataloader = val_dataloader
val_evaluator = _base_.graded_evaluator
test_evaluator = val_evaluator

# 8x the plain digits' images per epoch: 4 epochs (720 iterations) instead
# of 15 (345); the same warm-up epoch and cosine
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=3, eta_min=1e-4, by_epoch=True,
         begin=1, end=4, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=4, val_interval=4)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=2))

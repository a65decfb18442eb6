# DS-ViT Stage II on the graded digits: the gate after block 1 learns to
# route each image among the 4 sub-networks by SGS, from the Stage I
# supernet of configs/ds_vit_graded_digits_mvco.py (layer norms only:
# nothing to recalibrate). The gate recipe is the DS-MobileNetV1 demo's
# (configs/ds_mbnet_graded_digits_gate.py, where each choice is explained)
# except where said.
_base_ = ['./ds_vit_graded_digits.py']

model = dict(
    _delete_=True,
    type='DSGateClassifier',
    backbone=_base_.vit_backbone,
    head=_base_.vit_head,
    sgs_rule='smallest_widest',
    sgs_class_weight='balanced',
    complexity_weight=0.5,
    # the DS-MobileNetV1's unit (5e6 for 1.6-5.6 M MAdds) scaled to the
    # ViT's 6.6-16.2 M, so the MAdds term pulls as hard
    madds_unit=15e6,
    # written by tools/run_vit_demo.sh
    stage1_checkpoint='work_dirs/ds_vit_graded_digits/mvco/epoch_6.pth')

# only the slimming head learns (everything else is frozen)
optim_wrapper = dict(
    _delete_=True,
    optimizer=dict(
        type='SGD', lr=1.0, momentum=0.9, weight_decay=0.0, nesterov=True))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=3, eta_min=1e-5, by_epoch=True,
         begin=0, end=3, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=3, val_interval=3)
val_evaluator = [*_base_.graded_evaluator, dict(type='RoutingMetric')]
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))

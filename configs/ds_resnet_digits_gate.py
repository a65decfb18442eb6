# DS-ResNet Stage II demo on the embedded digits: the gate at the first block
# of layer3 learns to route each image among the 4 sub-networks by SGS,
# starting from the recalibrated Stage I supernet.
_base_ = ['./ds_resnet_digits.py']

model = dict(
    _delete_=True,
    type='DSGateClassifier',
    # the Stage I backbone, plus the gate at the first block of layer3
    # (where Stage I put its SE), routing over all 4 sub-networks
    backbone=dict(
        type='DSResNet',
        depth=18,
        stem='cifar',
        stem_channels=16,
        base_channels=16,
        strides=(2, 2, 2, 1),
        ratios={{_base_.backbone.ratios}},
        fixed_ratios={{_base_.backbone.fixed_ratios}},
        se_stage='layer3',
        gate=dict(stage='layer3', window=(0, 4))),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='DSLinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1),
        topk=(1, )),
    sgs_rule='smallest',  # or 'smallest_widest'
    complexity_weight=0.5,
    madds_unit=1e9,
    # written by tools/calibrate_bn.py (README: DS-ResNet digits demo)
    stage1_checkpoint='work_dirs/ds_resnet_digits/stage1/calibrated.pth')

# The Stage II recipe of configs/ds_mbnet_digits_gate.py: the reference's
# (lr 0.08, weight decay 1e-2, ~100k steps) compressed to 460 steps with
# lr 1.0 and no weight decay. Only the slimming head learns; BN is frozen.
optim_wrapper = dict(
    _delete_=True,
    optimizer=dict(
        type='SGD', lr=1.0, momentum=0.9, weight_decay=0.0, nesterov=True))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=20, eta_min=1e-5, by_epoch=True,
         begin=0, end=20, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=20, val_interval=20)
# Statistics come recalibrated from Stage I and stay frozen: no calibration.
val_cfg = dict(type='SubnetValLoop', subnets='all', calibrate=None)
test_cfg = dict(type='SubnetTestLoop', subnets='all', calibrate=None)
val_evaluator = [dict(type='Accuracy', topk=(1, )), dict(type='RoutingMetric')]
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))

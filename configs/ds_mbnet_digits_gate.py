# DS-MobileNetV1 Stage II demo on the embedded digits: the gate learns to
# route each image within the whole 14-sub-network ladder by SGS, starting
# from the recalibrated Stage I supernet.
_base_ = ['./ds_mbnet_digits.py']

model = dict(
    _delete_=True,
    type='DSGateClassifier',
    backbone=dict(
        type='DSMobileNetV1',
        arch={{_base_.arch}},
        subnets={{_base_.subnets}},
        # reference placement: first block of stage 4; window (start, size).
        # The whole ladder (1.28-4.66M MAdds, every sub-network shares the
        # groups before stage 4) rather than the reference's 4 narrowest of
        # DS-MBNet-S: on digits those span only 1.28-1.84M and score within
        # a point of each other, which leaves the gate nothing to trade.
        gate=dict(stage='stage4', window=(0, 14))),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='DSLinearClsHead',
        num_classes=10,
        in_channels=288,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1),
        topk=(1, )),
    sgs_rule='smallest',  # or 'smallest_widest'
    # Not the reference's plain mean: the Stage I supernet gets nearly every
    # digits training image right even at its narrowest, so 'hard' SGS
    # targets are rare (logged as easy_ratio) and the plain mean is
    # minimised by sending every image to the narrowest. Balanced, the rare
    # hard target weighs as much as the easy ones, and the gate routes the
    # images that look hard (docs/gate.md, "SGS rules").
    sgs_class_weight='balanced',
    complexity_weight=0.5,
    # the reference's unit is 1 GMac for ImageNet models of 0.1-0.6 GMac;
    # the digits models are 1.3-4.7 MMac, so the same pull towards cheap
    # sub-networks needs a unit of the same scale (with 1e9 the term is
    # ~1e-6 and pulls nowhere)
    madds_unit=5e6,
    # the recalibrated Stage I supernet (tools/calibrate_bn.py)
    stage1_checkpoint='work_dirs/ds_mbnet_digits/stage1/calibrated.pth')

# The reference Stage II recipe (docs/reference/dsnet.md: lr 0.08 cosine,
# weight decay 1e-2, ~100k steps) compressed to 460 steps: lr 1.0 without
# weight decay, with which the slimming head leaves the class prior in time.
# Only the slimming head learns (everything else has requires_grad=False and BN
# is frozen in eval mode).
optim_wrapper = dict(
    _delete_=True,
    optimizer=dict(
        type='SGD', lr=1.0, momentum=0.9, weight_decay=0.0, nesterov=True))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=20, eta_min=1e-5, by_epoch=True,
         begin=0, end=20, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=20, val_interval=20)
# Statistics come recalibrated from Stage I and stay frozen: no calibration.
val_cfg = dict(type='SubnetValLoop', subnets='all', calibrate=None)
test_cfg = dict(type='SubnetTestLoop', subnets='all', calibrate=None)
val_evaluator = [dict(type='Accuracy', topk=(1, )), dict(type='RoutingMetric')]
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))

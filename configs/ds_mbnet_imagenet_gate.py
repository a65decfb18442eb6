# DS-MobileNetV1 Stage II (gate training with SGS) on ImageNet, the reference
# recipe (docs/reference/dsnet.md, "Recipes of the reference release" and
# "Stage II: sandwich gate sparsification"), 8 GPUs x 64 images.
_base_ = ['./ds_mbnet_imagenet.py']

# Routing windows (start, size) over the 14 sub-networks: S is the
# reference's 4 narrowest (133-200M MAdds); M and L are our choice of the
# next windows (226-319M and 355-475M), as the paper picks windows by MAdds.
windows = dict(S=(0, 4), M=(4, 4), L=(8, 4))

model = dict(
    _delete_=True,
    type='DSGateClassifier',
    backbone=dict(
        type='DSMobileNetV1',
        arch='imagenet',
        # reference placement: the first block of stage 4
        gate=dict(stage='stage4', window=windows['S'])),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='DSLinearClsHead',
        num_classes=1000,
        in_channels=1152,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1),
        topk=(1, 5)),
    sgs_rule='smallest',
    complexity_weight=0.5,  # 0.5 * (mean GMac)^2
    madds_unit=1e9,
    # the recalibrated Stage I supernet (tools/calibrate_bn.py)
    stage1_checkpoint='work_dirs/ds_mbnet_imagenet/calibrated.pth')

# lr 0.08 (no warm-up), weight decay 1e-2, 30 cosine epochs + 10 cool-down;
# only the gate's slimming head is trained, BN frozen.
optim_wrapper = dict(
    _delete_=True,
    optimizer=dict(
        type='SGD', lr=0.08, momentum=0.9, weight_decay=1e-2, nesterov=True))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=30, eta_min=1e-5, by_epoch=True,
         begin=0, end=30, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=40, val_interval=1)
val_cfg = dict(
    _delete_=True, type='SubnetValLoop', subnets=[0, 3], calibrate=None)
test_cfg = dict(
    _delete_=True, type='SubnetTestLoop', subnets='all', calibrate=None)
val_evaluator = [dict(type='Accuracy', topk=(1, 5)), dict(type='RoutingMetric')]
test_evaluator = val_evaluator

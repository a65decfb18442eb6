# DS-ViT-S Stage II (gate training with SGS) on ImageNet, our reading of
# DS-Net++ (docs/reference/dsnet_pp.md, "Stage II for DS-ViT"): every supernet
# weight frozen (layer norms need no recalibration), only the slimming head of
# the gate after block 2 learns, AdamW lr 1e-3 for 30 epochs, no Mixup/CutMix
# (SGS needs a clean "is the smallest right" signal), 0.5 x (mean GMac)^2. 8
# GPUs x 128.
_base_ = ['./ds_vit_small_imagenet.py']

model = dict(
    _delete_=True,
    type='DSGateClassifier',
    backbone=_base_.vit_backbone,
    head=_base_.vit_head,
    sgs_rule='smallest',
    complexity_weight=0.5,
    madds_unit=1e9,
    stage1_checkpoint='work_dirs/ds_vit_small_imagenet/epoch_300.pth')
data_preprocessor = dict(_delete_=True, num_classes=1000,
                         mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)
train_dataloader = dict(dataset=dict(
    pipeline=[dict(type='LoadImageChecked', channels=3),
              *_base_.view_transforms[:2], dict(type='PackInputs')]))
optim_wrapper = dict(
    _delete_=True,
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.0))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=30, eta_min=1e-5, by_epoch=True,
         begin=0, end=30, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=30, val_interval=1)
val_cfg = dict(_delete_=True, type='SubnetValLoop', subnets=[0, 3],
               calibrate=None)
val_evaluator = [dict(type='Accuracy', topk=(1, 5)), dict(type='RoutingMetric')]
test_evaluator = val_evaluator

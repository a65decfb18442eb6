# DS-MobileNetV1 supernet (32x32 variant), Stage I (IB) on CIFAR-10.
# Not a paper recipe (the papers fine-tune ImageNet supernets on CIFAR-10):
# the reference Stage I recipe scaled to one GPU x 128 and 200 epochs.
_base_ = [
    'mmpretrain::_base_/datasets/cifar10_bs16.py',
    'mmpretrain::_base_/default_runtime.py',
    './_base_/ds_mbnet_schedule.py',
]
custom_imports = dict(imports=['dsnet_mm'], allow_failed_imports=False)

model = dict(
    type='DSImageClassifier',
    backbone=dict(type='DSMobileNetV1', arch='cifar'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='DSLinearClsHead',
        num_classes=10,
        in_channels=1152,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1),
        topk=(1, )),
    bootstrap='ib',
    num_random=2,
    ema_momentum=0.003,
    largest_dropout=0.2)

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=0.1, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=195, eta_min=1e-5, by_epoch=True,
         begin=5, end=200, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=200)
val_cfg = dict(calibrate=dict(num_batches=50))
test_cfg = dict(calibrate=dict(num_batches=100))
auto_scale_lr = dict(base_batch_size=128)

# DDP that runs the DS train_step (sandwich / SGS); a pass leaves unused
# slices and heads without gradient
model_wrapper_cfg = dict(
    type='DSDistributedDataParallel', find_unused_parameters=True)
# checkpoints carry the random generators (a resumed run continues exactly)
# and a checkpoint of another architecture is refused, not half-loaded
custom_hooks = [
    dict(type='RandomStateHook'),
    dict(type='CheckpointMatchHook')
]

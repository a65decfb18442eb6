# DS-ResNet Stage I demo on the embedded UCI digits (32x32, written by
# tools/setup_env.sh under data/): a quarter-width ResNet-18 with the CIFAR
# stem, the sandwich/IB recipe of configs/ds_mbnet_digits.py, sized to finish
# in a few minutes on 2 CPU cores.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['dsnet_mm'], allow_failed_imports=False)

# Widest widths: stem 16, streams 16/32/64/128 (block interiors alike);
# stride 2 already in layer1 (the 8x8 digits lose nothing at 16x16), so the
# feature maps are 32/16/8/4/4.
# Slimming ratios 0.25:0.25:1.0 (configs/ds_resnet50_imagenet.py) on layer3
# and layer4; stem, layer1 and layer2 at half width in every sub-network.
backbone = dict(
    type='DSResNet',
    depth=18,
    stem='cifar',
    stem_channels=16,
    base_channels=16,
    strides=(2, 2, 2, 1),
    ratios=[0.25, 0.5, 0.75, 1.0],
    fixed_ratios=dict(stem=0.5, layer1=0.5, layer2=0.5),
    # the Stage II gate's attention head (an SE on layer3's input), trained
    # with the supernet (as configs/ds_resnet50_imagenet.py)
    se_stage='layer3')

model = dict(
    type='DSImageClassifier',
    backbone=backbone,
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='DSLinearClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1),
        topk=(1, )),
    bootstrap='ib',
    num_random=2,
    # a few hundred iterations instead of the reference's 400k: a faster EMA
    # teacher (decay 0.95 instead of 0.997) so it leaves its random init
    ema_momentum=0.05,
    largest_dropout=0.2)

data_preprocessor = dict(
    num_classes=10, mean=[57.0] * 3, std=[82.0] * 3, to_rgb=False)
train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=2),  # no flips for digits
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]
dataset = dict(type='DigitsCIFAR10', data_root='data/digits/cifar')
train_dataloader = dict(
    batch_size=64,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(**dataset, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=128,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(**dataset, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(
        type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=14, eta_min=1e-4, by_epoch=True,
         begin=1, end=15, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=15, val_interval=15)
val_cfg = dict(type='SubnetValLoop', subnets='all',
               calibrate=dict(num_batches=10))
test_cfg = dict(type='SubnetTestLoop', subnets='all',
                calibrate=dict(num_batches=10))

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=2))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)

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

# DS-MobileNetV1 Stage I demo on the embedded UCI digits (32x32, written by
# tools/setup_env.sh under data/): the reference supernet at a quarter of its
# widths, same 14-sub-network ladder and sandwich/IB recipe, sized to finish
# in a few minutes on 2 CPU cores.
_base_ = ['mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['dsnet_mm'], allow_failed_imports=False)

# Quarter-width DS-MobileNetV1 for 32x32 images of 8x8 digits (a stride-2
# stem loses nothing). Narrow early stages 4/8/12/24, wide (largest only)
# 8/24/44/68; stage 4 = 56 + 8k, stage 5 = 184 + 8k for k = 0..13, as the
# reference's 224 + 32k and 736 + 32k. Feature maps 16/16/8/8/4/4.
arch = dict(
    stem=(8, 2),
    stages=[('stage1', 24, 1, 1), ('stage2', 44, 2, 2), ('stage3', 68, 2, 1),
            ('stage4', 160, 6, 2), ('stage5', 288, 2, 1)])
subnets = dict(
    smallest=dict(stem=4, stage1=8, stage2=12, stage3=24, stage4=56,
                  stage5=184),
    widest=dict(stem=4, stage1=8, stage2=12, stage3=24, stage4=160,
                stage5=288),
    num=14)

model = dict(
    type='DSImageClassifier',
    backbone=dict(type='DSMobileNetV1', arch=arch, subnets=subnets),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='DSLinearClsHead',
        num_classes=10,
        in_channels=288,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1),
        topk=(1, )),
    bootstrap='ib',
    num_random=2,
    # 345 iterations instead of the reference's 400k: a faster EMA teacher
    # (decay 0.95 instead of 0.997) so it leaves its random init in time
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
# The images are 32x32 and their transforms cost ~0.1 ms each: loading in
# the main process is faster than starting and feeding a worker process on
# a 2-core machine
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(**dataset, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=128,
    num_workers=0,
    dataset=dict(**dataset, split='test', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(
    # frozen parts (the EMA teacher) left out in one log line
    constructor='DSOptimWrapperConstructor',
    optimizer=dict(
        type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=14, eta_min=1e-4, by_epoch=True,
         begin=1, end=15, convert_to_iter_based=True),
]
# resumes exactly from any checkpoint, mid-epoch and mid-validation included
# (dsnet_mm/engine/train_loop.py); for iteration checkpoints set
# default_hooks.checkpoint.by_epoch=False and .interval=N (iterations)
train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=15, val_interval=15)
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

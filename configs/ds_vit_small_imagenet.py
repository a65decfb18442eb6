# DS-ViT-S (DS-Net++'s DS-ViT++ on DeiT-S) supernet, Stage I on ImageNet with
# MvCo: the DeiT-S recipe (docs/reference/dsnet_pp.md, "Stage I recipe for
# DS-ViT-S": 300 epochs, 5 of warm-up, AdamW lr 5e-4 x batch / 512, weight
# decay 0.05, RandAugment m9-mstd0.5, Mixup 0.8, CutMix 1.0, random erasing
# 0.25, label smoothing 0.1, stochastic depth 0.1) with the sandwich of 4
# routes, IB from an EMA teacher (decay 0.9999) and MvCo option A with 2 views.
# 8 GPUs x 128. Every DS-Net++ part is our reading of the paper
# (docs/reference/dsnet_pp.md).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['dsnet_mm'], allow_failed_imports=False)

# the ladder of docs/reference/dsnet_pp.md (embedding 192-384, heads 3-6, MLP
# 384-1536 in 4 steps) on blocks 3-11; blocks 0-2 at full width come before the
# gate
vit_backbone = dict(
    type='DSViT',
    arch='deit-small',
    img_size=224,
    patch_size=16,
    fixed_blocks=3,
    drop_path_rate=0.1,
    # Stage I trains the gate's attention head (an SE on the tokens),
    # Stage II its slimming head
    gate=dict(block=2, window=(0, 4), tokens='cls_token'))
vit_head = dict(
    type='DSLinearClsHead',
    num_classes=1000,
    in_channels=384,
    loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
    topk=(1, 5))

model = dict(
    type='DSImageClassifier',
    backbone=vit_backbone,
    head=vit_head,
    bootstrap='ib',
    num_random=2,
    # decay 0.9999, within the 0.9996-0.99996 of DeiT-style EMA teachers
    # (docs/reference/dsnet_pp.md)
    ema_momentum=1e-4,
    largest_dropout=0.0,
    mvco=dict(mode='view_mean'),
    # Mixup/CutMix draw one partner and ratio for both views of an image
    # (MultiViewClsDataPreprocessor)
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))
data_preprocessor = dict(type='MultiViewClsDataPreprocessor')

bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
# the DeiT augmentations, drawn for each view on its own. RandAugment is
# DeiT's 'rand-m9-mstd0.5-inc1': mmpretrain's 'timm_increasing' policies
# (timm's ops whose strength grows with the magnitude), 2 ops at magnitude
# 9 with std 0.5 out of 10. Interpolation: bicubic in the random-resized
# crop and RandAugment's geometric ops (DeiT's training interpolation);
# evaluation takes the base config's test pipeline.
view_transforms = [
    dict(type='RandomResizedCrop', scale=224, backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2,
         total_level=10, magnitude_level=9, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean],
                      interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand',
         min_area_ratio=0.02, max_area_ratio=1 / 3, fill_color=bgr_mean,
         fill_std=bgr_std),
]
train_pipeline = [
    dict(type='LoadImageChecked', channels=3),
    dict(type='MultiView', num_views=2, transforms=[view_transforms]),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    # frozen parts (the EMA teacher) left out in one log line
    constructor='DSOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=5e-4 * 1024 / 512, weight_decay=0.05,
                   eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0)
        }),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5,
         T_max=295, convert_to_iter_based=True),
]
# epoch-based; resumes exactly from iteration checkpoints too
train_cfg = dict(
    type='ResumableEpochBasedTrainLoop', max_epochs=300, val_interval=10)
# layer norms only: nothing to recalibrate
val_cfg = dict(type='SubnetValLoop', subnets='all', calibrate=None)
test_cfg = dict(type='SubnetTestLoop', subnets='all', calibrate=None)
auto_scale_lr = dict(base_batch_size=1024)

randomness = dict(seed=0)
model_wrapper_cfg = dict(
    type='DSDistributedDataParallel', find_unused_parameters=True)
custom_hooks = [
    dict(type='RandomStateHook'),
    dict(type='CheckpointMatchHook')
]

# SSD with the digits DS-MobileNetV1 on the embedded digits-VOC set (real UCI
# digits pasted on canvases, classes '0'..'9', written by the set-up under
# data/digits_voc/ in mmdet's VOC layout): a CPU-sized detection Stage I,
# the sandwich rule on the detection losses, sized for a demo on 2 cores.
# mmdet's SSD head, losses and assigner (mmdet::_base_/models/ssd300.py) and
# VOCMetric; the input size, levels and anchors are scaled to the canvases.
_base_ = [
    'mmdet::_base_/models/ssd300.py', 'mmdet::_base_/default_runtime.py',
    '../_base_/graded_digits.py'
]
custom_imports = dict(imports=['dsnet_mm'], allow_failed_imports=False)

input_size = 128
num_classes = 10
# The digits DS-MobileNetV1 of the graded-digits demo
# (configs/ds_mbnet_graded_digits.py), whose calibrated Stage I checkpoint
# initialises the backbone: arch and sub-networks must match it. Its ladder
# widens stage2..stage5 from 5/16/4/15 to 44/68/160/288 channels; on the
# graded digits the widest classifies far better than the narrowest, so the
# detector's sub-networks differ in accuracy too. Stage 5
# (stride 8: 16x16 maps at 128 px) is 15..288 wide in the 14 sub-networks
# and 288 in the largest.
arch = dict(
    stem=(8, 2),
    stages=[('stage1', 24, 1, 1), ('stage2', 44, 2, 2), ('stage3', 68, 2, 1),
            ('stage4', 160, 6, 2), ('stage5', 288, 2, 1)])
subnets = _base_.graded_subnets
# one backbone level (stride 8) and two extra ones (16, 32): maps of 16/8/4
# at 128 px for the set's digits, whose boxes are 14..56 px (sqrt of the
# area; median 32) and 1 to 1.6 times as tall as wide
in_channels = (288, 128, 64)

model = dict(
    # the sandwich rule (largest, 2 random, smallest; one optimizer step per
    # iteration) is the DS detector's train_step
    type='DSSingleStageDetector',
    # one random sub-network, not the paper's two: three detector passes a
    # step instead of four keep the demo's detection Stage I short on a
    # 2-core CPU (tools/run_det_demo.sh)
    num_random=1,
    # the digits classifier's normalisation (configs/ds_mbnet_digits.py):
    # grey digits, no channel swap
    data_preprocessor=dict(
        mean=[57.0] * 3, std=[82.0] * 3, bgr_to_rgb=False),
    backbone=dict(
        _delete_=True,
        type='mmpretrain.DSMobileNetV1',
        arch=arch,
        subnets=subnets,
        out_indices=(4, ),
        init_cfg=dict(
            type='Pretrained',
            checkpoint=('work_dirs/ds_mbnet_graded_digits/stage1/'
                        'calibrated.pth'),
            prefix='backbone.')),
    neck=dict(
        in_channels=in_channels[:1],
        out_channels=in_channels,
        level_strides=(2, 2),
        level_paddings=(1, 1),
        l2_norm_scale=None),
    bbox_head=dict(
        num_classes=num_classes,
        in_channels=in_channels,
        # SSDAnchorGenerator derives sizes only for 300 or 512 px inputs:
        # explicit sizes per level (squares of 16/21, 28/35 and 44/53 px,
        # and 1:2 / 2:1 boxes), spanning the digits' 14..56 px
        anchor_generator=dict(
            _delete_=True,
            type='SSDAnchorGenerator',
            scale_major=False,
            strides=[8, 16, 32],
            ratios=[[2], [2], [2]],
            min_sizes=[16, 28, 44],
            max_sizes=[28, 44, 64])))

dataset_type = 'DigitsVOCDataset'  # mmdet's VOCDataset, classes '0'..'9'
data_root = 'data/digits_voc/VOCdevkit/'
# digits are not mirror-symmetric: no flips; the canvases already vary
# scale and position, so no crop or expansion either (the canvases are
# 128 px: Resize keeps them as they are)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size), keep_ratio=False),
    # after Resize, so the ground truth keeps the original scale
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='VOC2007/ImageSets/Main/trainval.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        # no min_size / bbox_min_size: a digit can be smaller than 32 px
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='VOC2007/ImageSets/Main/test.txt',
        data_prefix=dict(sub_data_root='VOC2007/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='VOCMetric', metric='mAP', eval_mode='11points')
test_evaluator = val_evaluator

# SGD as mmdet's SSD (momentum 0.9, weight decay 5e-4) at a learning rate
# for batches of 8 from a pretrained supernet; a short warm-up, then steps
max_epochs = 10
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[7, 9], gamma=0.1)
]
# dsnet_mm's loops and hooks live in mmpretrain's registries: the prefix
# finds them from mmdet's default scope. The loop resumes exactly from any
# checkpoint, mid-epoch included
train_cfg = dict(
    type='mmpretrain.ResumableEpochBasedTrainLoop', max_epochs=max_epochs,
    val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
# testing evaluates every sub-network (BN recalibrated on training batches
# first: in the sandwich each width's statistics move only when it runs)
# and reports VOC mAP with MAdds per image at 128x128 (backbone, neck and
# head; no NMS) in report.md / accuracy_vs_madds.png of the work dir
test_cfg = dict(
    type='mmpretrain.SubnetTestLoop',
    metric='pascal_voc/mAP',
    calibrate=dict(num_batches=20))

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=4, max_keep_ckpts=2))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
log_processor = dict(window_size=10)

# DDP that runs the DS detector's train_step; a pass leaves unused slices
model_wrapper_cfg = dict(
    type='DSDistributedDataParallel', find_unused_parameters=True)
# checkpoints carry the random generators (a resumed run continues exactly)
# and a checkpoint of another architecture is refused, not half-loaded
custom_hooks = [
    dict(type='mmpretrain.RandomStateHook'),
    dict(type='mmpretrain.CheckpointMatchHook')
]

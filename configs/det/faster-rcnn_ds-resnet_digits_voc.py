# Faster R-CNN with FPN over a small DS-ResNet-18 on the embedded digits-VOC
# set (configs/det/ssd_ds-mbnet_digits_voc.py: 128 px canvases of real UCI
# digits, classes '0'..'9'): the two-stage DS detector trained by the
# sandwich rule, sized to train from scratch in a few minutes on one CPU
# core. The data, pipelines, VOCMetric, per-sub-network test loop (BN
# recalibrated, mAP and MAdds per sub-network), hooks and wrapper are the
# SSD digits config's; the model is mmdet's Faster R-CNN
# (mmdet::_base_/models/faster-rcnn_r50_fpn.py: RPNHead, StandardRoIHead,
# Shared2FCBBoxHead, their assigners, samplers and losses) scaled down.
_base_ = ['./ssd_ds-mbnet_digits_voc.py']

num_classes = 10
# The DS-ResNet: ResNet-18 at a quarter width (stem 16, streams 16/32/64/128
# at strides 4/8/16/32: maps of 32/16/8/4 at 128 px), the slimming ratios
# of configs/ds_resnet50_imagenet.py; stem and layer1 at half width in
# every sub-network. No pretrained backbone: mmpretrain's init (Kaiming).
# Sub-networks: layer2..layer4 at 0.25/0.5/0.75/1.0 of 32/64/128.
backbone_widths = [32, 64, 128]  # layer2..layer4, the FPN's inputs
fpn_channels = 64

model = dict(
    _delete_=True,
    type='DSTwoStageDetector',
    # one random sub-network: largest, one random, smallest per step (as
    # the SSD digits config), three detector passes a step
    num_random=1,
    # RoI head MAdds at test_cfg.rpn.max_per_img = 100 proposals per image
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[57.0] * 3,
        std=[82.0] * 3,
        bgr_to_rgb=False,
        pad_size_divisor=32),
    backbone=dict(
        type='mmpretrain.DSResNet',
        depth=18,
        stem_channels=16,
        base_channels=16,
        out_indices=(1, 2, 3),
        ratios=[0.25, 0.5, 0.75, 1.0],
        fixed_ratios=dict(stem=0.5, layer1=0.5)),
    neck=dict(
        type='FPN',
        in_channels=backbone_widths,
        out_channels=fpn_channels,
        num_outs=3),
    rpn_head=dict(
        type='RPNHead',
        in_channels=fpn_channels,
        feat_channels=fpn_channels,
        # 16, 32 and 64 px anchors at strides 8/16/32 (three aspect ratios
        # each): the set's digits are 14..56 px, 1 to 1.6 times as tall as
        # wide
        anchor_generator=dict(
            type='AnchorGenerator',
            scales=[2],
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[.0, .0, .0, .0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=fpn_channels,
            featmap_strides=[8, 16, 32]),
        bbox_head=dict(
            type='Shared2FCBBoxHead',
            in_channels=fpn_channels,
            fc_out_channels=256,
            roi_feat_size=7,
            num_classes=num_classes,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0., 0., 0., 0.],
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
    # mmdet's Faster R-CNN settings with fewer samples and proposals: a
    # canvas holds a few digits, not a VOC scene's objects
    train_cfg=dict(
        rpn=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.7,
                neg_iou_thr=0.3,
                min_pos_iou=0.3,
                match_low_quality=True,
                ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler',
                num=128,
                pos_fraction=0.5,
                neg_pos_ub=-1,
                add_gt_as_proposals=False),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        rpn_proposal=dict(
            nms_pre=500,
            max_per_img=200,
            nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.5,
                neg_iou_thr=0.5,
                min_pos_iou=0.5,
                match_low_quality=False,
                ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler',
                num=128,
                pos_fraction=0.25,
                neg_pos_ub=-1,
                add_gt_as_proposals=True),
            pos_weight=-1,
            debug=False)),
    test_cfg=dict(
        rpn=dict(
            nms_pre=500,
            max_per_img=100,
            nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            score_thr=0.05,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=20)))

# from scratch: SGD at 0.02 for batches of 8 after a warm-up, weight decay
# as mmdet's Faster R-CNN, gradients clipped (a from-scratch two-stage
# detector's first steps are large)
max_epochs = 5
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=10, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[4], gamma=0.1)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=max_epochs,
                    max_keep_ckpts=1))

# Faster R-CNN on PASCAL VOC 07+12 with DS-ResNet-50 in place of ResNet-50:
# mmdet's own recipe (mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py:
# FPN, RPN, RoI head, anchors, samplers, pipeline, 4x3-epoch schedule,
# VOCMetric) with only what the DS backbone needs changed below, as
# configs/det/retinanet_ds-resnet50_fpn_voc0712.py does for RetinaNet.
_base_ = ['mmdet::pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py']
custom_imports = dict(imports=['dsnet_mm'], allow_failed_imports=False)

model = dict(
    # the sandwich rule (largest, 2 random, smallest; the RPN and RoI
    # losses of each, one optimizer step per iteration) needs the DS
    # detector's train_step; otherwise mmdet's FasterRCNN (a plain
    # TwoStageDetector), unchanged. The RoI head's MAdds are counted at
    # test_cfg.rpn.max_per_img = 1000 proposals per image
    type='DSTwoStageDetector',
    num_random=2,
    backbone=dict(
        _delete_=True,  # drop ResNet's keys (style, norm_cfg, ...)
        type='mmpretrain.DSResNet',
        depth=50,
        # the supernet of configs/ds_resnet50_imagenet.py, whose checkpoint
        # loads below: these must match it
        ratios=[0.25, 0.5, 0.75, 1.0],
        fixed_ratios=dict(stem=0.5, layer1=0.5, layer2=0.5),
        se_stage='layer3',
        # as mmdet's ResNet: C2..C5 to the FPN, the stem and layer1 frozen
        # and every BN in eval mode, so each sub-network keeps the
        # statistics row calibrated on ImageNet
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_eval=True,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/ds_resnet50_imagenet/calibrated.pth',
            prefix='backbone.')),
    # the FPN's in_channels are the largest architecture's widths, which
    # ResNet-50's are: narrower sub-networks reach its 1x1 laterals
    # zero-padded, which equals slicing their input weights
)

# DDP must run the DS detector's own train_step (mmengine's wrapper runs one
# plain forward); the sub-networks leave slices unused in each pass
model_wrapper_cfg = dict(
    type='DSDistributedDataParallel', find_unused_parameters=True)

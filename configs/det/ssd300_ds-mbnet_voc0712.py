# SSD300 on PASCAL VOC 07+12 with DS-MobileNetV1 in place of VGG-16: mmdet's
# own recipe (mmdet::pascal_voc/ssd300_voc0712.py: pipeline, anchors, 24-epoch
# schedule, VOCMetric) with only what the DS backbone needs changed below.
# DS-Net evaluated detection with PytorchSSD's MobileNet replaced by DS-MBNet
# (changlin31/DS-Net#4); the neck is our design
# (docs/reference/detection.md), modelled on PytorchSSD's three MobileNet
# taps.
_base_ = ['mmdet::pascal_voc/ssd300_voc0712.py']
custom_imports = dict(imports=['dsnet_mm'], allow_failed_imports=False)

# widest width of each tapped stage: the largest architecture's (stage3 is
# 96 in all 14 sub-networks but 264 in the largest, which the sandwich
# trains; narrower outputs reach the neck zero-padded, which equals slicing
# its input weights, see dsnet_mm.models.detectors.pad_to)
backbone_widths = (264, 640, 1152)

model = dict(
    # the sandwich rule (largest, 2 random, smallest; one optimizer step per
    # iteration) needs the DS detector's train_step; otherwise mmdet's
    # SingleStageDetector, unchanged
    type='DSSingleStageDetector',
    num_random=2,
    # DS-MBNet was trained on ImageNet-normalised RGB (std 58.4/57.1/57.4),
    # not on the caffe-VGG std of 1 that SSD300 uses
    data_preprocessor=dict(std=[58.395, 57.12, 57.375]),
    backbone=dict(
        _delete_=True,  # drop SSDVGG's keys
        type='mmpretrain.DSMobileNetV1',
        arch='imagenet',
        # stages 3/4/5: strides 8/16/32, 38/19/10 maps at 300 px, as VGG's
        # conv4_3 / fc7 taps give SSD300 its first two levels
        out_indices=(2, 3, 4),
        # SSD trains every layer and BN (8 images a GPU): each sub-network's
        # BN statistics row learns when it runs; recalibrate before testing
        frozen_stages=-1,
        norm_eval=False,
        # the calibrated Stage I supernet of configs/ds_mbnet_imagenet.py
        init_cfg=dict(
            type='Pretrained',
            checkpoint='work_dirs/ds_mbnet_imagenet/calibrated.pth',
            prefix='backbone.')),
    neck=dict(
        # three backbone levels instead of VGG's two, so three extra levels
        # (10 -> 5 -> 3 -> 1) keep SSD300's six maps 38/19/10/5/3/1 and with
        # them its VOC anchors unchanged (strides 8..300, ratio range
        # 0.2-0.9); no L2Norm: VGG's conv4_3 needed it for its scale, the
        # BN-ed DS-MBNet features do not
        in_channels=backbone_widths,
        out_channels=backbone_widths + (512, 256, 256),
        level_strides=(2, 1, 1),
        level_paddings=(1, 0, 0),
        l2_norm_scale=None),
    # plain 3x3 head convs (use_depthwise=False, as SSD300): zero-padding the
    # narrower sub-networks' features is exact for them
    bbox_head=dict(in_channels=backbone_widths + (512, 256, 256)))

# DDP must run the DS detector's own train_step (mmengine's wrapper runs one
# plain forward); the sub-networks leave slices unused in each pass
model_wrapper_cfg = dict(
    type='DSDistributedDataParallel', find_unused_parameters=True)

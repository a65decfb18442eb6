# DS-ResNet-50 Stage II (gate training with SGS) on ImageNet: the reference
# Stage II recipe of DS-MBNet (configs/ds_mbnet_imagenet_gate.py, whose
# schedule, loops and evaluators this inherits), 8 GPUs x 64.
_base_ = ['./ds_mbnet_imagenet_gate.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='DSResNet',
        depth=50,
        # as configs/ds_resnet50_imagenet.py (Stage I)
        ratios=[0.25, 0.5, 0.75, 1.0],
        fixed_ratios=dict(stem=0.5, layer1=0.5, layer2=0.5),
        se_stage='layer3',
        # first block of layer3, routing over all 4 sub-networks (the ratio
        # list is short: one window, where DS-MBNet's 14 give S/M/L windows)
        gate=dict(stage='layer3', window=(0, 4))),
    head=dict(in_channels=2048),
    # the recalibrated Stage I supernet (tools/calibrate_bn.py)
    stage1_checkpoint='work_dirs/ds_resnet50_imagenet/calibrated.pth')

# DS-ResNet Stage II demo on the embedded digits: the gate at the first block
# of layer3 learns to route each image among the 4 sub-networks by SGS,
# starting from the recalibrated Stage I supernet. The Stage II recipe (and
# its balanced SGS loss) is the DS-MobileNetV1 demo's.
_base_ = ['./ds_mbnet_digits_gate.py']

model = dict(
    # the Stage I backbone (configs/ds_resnet_digits.py), plus the gate at
    # the first block of layer3 (where Stage I put its SE), routing over all
    # 4 sub-networks
    backbone=dict(
        _delete_=True,
        type='DSResNet',
        depth=18,
        stem='cifar',
        stem_channels=16,
        base_channels=16,
        strides=(2, 2, 2, 1),
        ratios=[0.25, 0.5, 0.75, 1.0],
        fixed_ratios=dict(stem=0.5, layer1=0.5, layer2=0.5),
        se_stage='layer3',
        gate=dict(stage='layer3', window=(0, 4))),
    head=dict(in_channels=128),
    # the recalibrated Stage I supernet (tools/calibrate_bn.py; the
    # commands in docs/results.md, "DS-ResNet on the plain digits")
    stage1_checkpoint='work_dirs/ds_resnet_digits/stage1/calibrated.pth')

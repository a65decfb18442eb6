# DS-ResNet Stage I demo on the embedded UCI digits (32x32, written by
# tools/setup_env.sh under data/): a quarter-width ResNet-18 with the CIFAR
# stem, the sandwich/IB recipe of configs/ds_mbnet_digits.py, sized to finish
# in a few minutes on 2 CPU cores. Data, schedule, hooks and the sandwich/IB
# settings come from the DS-MobileNetV1 demo.
_base_ = ['./ds_mbnet_digits.py']

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
    backbone=dict(_delete_=True, **backbone),
    head=dict(in_channels=128))

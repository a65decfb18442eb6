# DS-ResNet-50 supernet, Stage I (IB) on ImageNet, 8 GPUs x 64 images. No
# DS-ResNet recipe was released (docs/reference/dsnet.md, "DS-ResNet"): this
# takes the reference Stage I recipe of DS-MBNet (pipeline, schedule, EMA,
# sandwich).
_base_ = ['./ds_mbnet_imagenet.py']

# Slimming ratios 0.25:0.25:1.0 (our reading of the DS-Net papers' DS-ResNet
# description; the paper's lists were not available to us) on layer3 and
# layer4; stem, layer1 and layer2 stay at half width in every sub-network, as
# DS-MBNet keeps its stages before the gate narrow. The largest (all at full
# width, the in-place teacher) is mmpretrain's ResNet-50.
ratios = [0.25, 0.5, 0.75, 1.0]
fixed_ratios = dict(stem=0.5, layer1=0.5, layer2=0.5)
# The Stage II gate sits at the first block of layer3 (14x14), where the
# reference DS-MBNet puts its gate (first block of its 14x14 stage,
# docs/reference/dsnet.md, "The double-headed gate"). Its attention head (an SE
# on layer3's input) is part of the supernet from Stage I on; Stage II adds
# only the slimming head.
se_stage = 'layer3'

model = dict(
    backbone=dict(
        _delete_=True,
        type='DSResNet',
        depth=50,
        ratios=ratios,
        fixed_ratios=fixed_ratios,
        se_stage=se_stage),
    head=dict(in_channels=2048))

# Every sub-network and the largest is evaluated (the list is short)
val_cfg = dict(subnets='all')

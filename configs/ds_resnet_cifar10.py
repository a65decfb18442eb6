# DS-ResNet-50 supernet (CIFAR stem: 3x3 stride-1 conv, no max pooling, as
# mmpretrain's ResNet_CIFAR), Stage I (IB) on CIFAR-10, trained from scratch
# with the recipe of configs/ds_mbnet_cifar10.py (one GPU x 128, 200
# epochs). Not a paper recipe: the papers transfer ImageNet supernets.
_base_ = ['./ds_mbnet_cifar10.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='DSResNet',
        depth=50,
        stem='cifar',
        # every group slimmed by one ratio, 0.25:0.25:1.0 (our reading of
        # the DS-Net papers, docs/reference/dsnet.md); no gate
        ratios=[0.25, 0.5, 0.75, 1.0]),
    head=dict(in_channels=2048))

# every sub-network and the largest (the base names DS-MBNet's subnet_13)
val_cfg = dict(subnets='all')

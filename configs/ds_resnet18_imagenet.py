# DS-ResNet-18 supernet, Stage I (IB) on ImageNet, 8 GPUs x 64 images: the
# seed network of a progressive search, with no gate (nor its SE). The
# reference Stage I recipe of DS-MBNet (no DS-ResNet recipe was released,
# docs/reference/dsnet.md, "DS-ResNet").
_base_ = ['./ds_resnet50_imagenet.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='DSResNet',
        depth=18,
        # every group (stem, streams, block interiors) slimmed by one ratio,
        # 0.25:0.25:1.0; the largest is mmpretrain's ResNet-18
        ratios=[0.25, 0.5, 0.75, 1.0]),
    head=dict(in_channels=512))

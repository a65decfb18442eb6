# DS-MBNet++ (DS-CNN++ of DS-Net++): the DS-MobileNetV1 supernet of
# configs/ds_mbnet_imagenet.py whose stage-4 and stage-5 depthwise convs also
# slice their kernel, {3, 5} (stored 5x5, a 3x3 sub-network uses the centre;
# our reading of DS-Net++, docs/reference/dsnet_pp.md). The 14 sub-networks
# widen as the reference's and take the 3x3 kernels in the narrower half, 5x5
# in the wider (the ladder snaps a choice group to the choice nearest its even
# step). Same Stage I recipe (sandwich, IB).
_base_ = ['./ds_mbnet_imagenet.py']

kernels = dict(stage4=(3, 5), stage5=(3, 5))
model = dict(
    backbone=dict(
        kernel_choices=kernels,
        subnets=dict(
            smallest=dict(stem=16, stage1=32, stage2=48, stage3=96,
                          stage4=224, stage5=736,
                          **{'stage4.kernel': 3, 'stage5.kernel': 3}),
            widest=dict(stem=16, stage1=32, stage2=48, stage3=96,
                        stage4=640, stage5=1152,
                        **{'stage4.kernel': 5, 'stage5.kernel': 5}),
            num=14)))

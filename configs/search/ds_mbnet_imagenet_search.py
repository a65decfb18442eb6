# Progressive sub-network search (seed 003) over DS-MobileNetV1 on ImageNet
# (configs/ds_mbnet_imagenet.py), with the seed's MobileNetV1 settings:
# G = 8, down to 25 % of each searched group, a 10k held-out split from
# *train*, threshold 40 %, one epoch of fine-tuning at most. The searched
# groups are stage4 and stage5, the ones DS-Net's reference ladder slims
# (the earlier groups are the same in all of its 14 sub-networks, as the
# gate in stage4 requires). Start from a trained network (--load-from).
_base_ = ['../ds_mbnet_imagenet.py']

search = dict(
    ranking='noise',
    noise_order='descending',
    base_epochs=1,
    base_lr=0.0125,  # the seed's 0.05 at batch 256, here 64
    base_weight_decay=4e-5,
    groups=8,
    min_ratio=0.25,
    held_out=10000,
    threshold=40.0,
    finetune_iters=19858,  # one epoch of the rest at batch 64
    finetune_lr=0.01,
    check_interval=2000,
    criterion='accuracy',
    num_keep=14,
    divisor=8,
    seed=0)

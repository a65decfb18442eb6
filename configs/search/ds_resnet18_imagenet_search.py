# Progressive sub-network search (seed 003) with the seed's ResNet-18
# ImageNet recipe, over DS-ResNet-18 (configs/ds_resnet18_imagenet.py):
# G = 8, every group down to 25 %, a 10k held-out split drawn from *train*,
# fine-tuning threshold 40 %, one epoch of fine-tuning at most.
#
# Unlike the seed's modified ResNet-18 (a projection shortcut in every
# block, so block widths vary independently), DS-ResNet keeps mmpretrain's
# identity shortcuts: a stage's stream is one width group and each block's
# interior its own (reference progressive_search.md 1.1). The search is one
# process: start it from an ImageNet checkpoint (--load-from, e.g. one
# converted by tools/convert/mmpretrain_resnet.py) so that base training
# only has to learn the noise scales.
#
#   python tools/search_subnets.py configs/search/ds_resnet18_imagenet_search.py \
#       --work-dir work_dirs/search_r18 --load-from r18_ds.pth
_base_ = ['../ds_resnet18_imagenet.py']

search = dict(
    ranking='noise',
    noise_order='descending',
    # the seed trains 30 epochs from scratch (SGD lr 0.05 at batch 256,
    # cosine, wd 4e-5); from a trained network, 1 epoch learns the noise
    base_epochs=1,
    base_lr=0.0125,  # 0.05 * 64 / 256
    base_weight_decay=4e-5,
    groups=8,
    min_ratio=0.25,
    held_out=10000,
    threshold=40.0,
    # one epoch of the 1.27M training images left, at batch 64
    finetune_iters=19858,
    finetune_lr=0.01,
    check_interval=2000,
    criterion='accuracy',
    num_keep=14,
    divisor=8,
    seed=0)

# Progressive sub-network search (docs/search.md) with the paper's ImageNet
# recipe (configs/_base_/search_imagenet.py) over DS-ResNet-18
# (configs/ds_resnet18_imagenet.py).
#
# Unlike the paper's modified ResNet-18 (a projection shortcut in every
# block, so block widths vary independently), DS-ResNet keeps mmpretrain's
# identity shortcuts: a stage's stream is one width group and each block's
# interior its own (docs/reference/progressive_search.md), all searched.
#
#   python tools/search_subnets.py configs/search/ds_resnet18_imagenet_search.py \
#       --work-dir work_dirs/search_r18 --load-from r18_ds.pth
# (r18_ds.pth: e.g. mmpretrain's ResNet-18 converted by
# tools/convert/mmpretrain_resnet.py)
_base_ = ['../ds_resnet18_imagenet.py', '../_base_/search_imagenet.py']

# Progressive sub-network search (docs/search.md) over DS-MobileNetV1 on
# ImageNet (configs/ds_mbnet_imagenet.py) with the paper's ImageNet recipe
# (configs/_base_/search_imagenet.py). The searched groups are stage4 and
# stage5, the ones DS-Net's reference ladder slims (the earlier groups are
# the same in all of its 14 sub-networks, as the gate in stage4 requires).
_base_ = ['../ds_mbnet_imagenet.py', '../_base_/search_imagenet.py']

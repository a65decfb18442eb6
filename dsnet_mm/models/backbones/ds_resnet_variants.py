# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The DS forms of mmpretrain's ResNet variants: ``ResNet_CIFAR`` (3x3 stem,
no max pool), ``ResNetV1c`` (deep stem) and ``ResNetV1d`` (deep stem and
average-pool shortcuts)."""
from mmpretrain.registry import MODELS

from .ds_resnet import DSResNet


@MODELS.register_module()
class DSResNet_CIFAR(DSResNet):
    """:class:`DSResNet` with mmpretrain ``ResNet_CIFAR``'s stem (3x3
    stride-1 conv, no pooling): ``stem='cifar'``; ``deep_stem`` must stay
    False. Takes every other argument of :class:`DSResNet`."""

    def __init__(self, depth: int, deep_stem: bool = False, **kwargs) -> None:
        if deep_stem:
            raise ValueError('DSResNet_CIFAR has a 3x3 stride-1 stem conv '
                             'and no deep stem (as mmpretrain\'s '
                             'ResNet_CIFAR): set deep_stem=False')
        if kwargs.setdefault('stem', 'cifar') != 'cifar':
            raise ValueError(f"DSResNet_CIFAR has stem='cifar', got "
                             f"stem={kwargs['stem']!r}")
        super().__init__(depth, **kwargs)


@MODELS.register_module()
class DSResNetV1c(DSResNet):
    """:class:`DSResNet` as mmpretrain's ``ResNetV1c``: the deep stem
    (``deep_stem=True``), plain projection shortcuts."""

    def __init__(self, **kwargs) -> None:
        super().__init__(deep_stem=True, avg_down=False, **kwargs)


@MODELS.register_module()
class DSResNetV1d(DSResNet):
    """:class:`DSResNet` as mmpretrain's ``ResNetV1d``: the deep stem and
    average-pooling projection shortcuts (``deep_stem=True,
    avg_down=True``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(deep_stem=True, avg_down=True, **kwargs)

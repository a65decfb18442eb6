# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-ResNet: dynamic slimmable ResNets (BasicBlock and Bottleneck), a
drop-in for mmpretrain's ``ResNet``, ``ResNet_CIFAR``, ``ResNetV1c`` and
``ResNetV1d``."""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from dsnet_mm.ops import DSBatchNorm2d, DSConv2d, DSSqueezeExcite
from dsnet_mm.ops.utils import (check_bool, check_choice, check_float,
                                check_int, check_ints, check_keys,
                                check_type)
from ..gates import DSGate
from ..subnet import SubnetSpace, SubnetSpec, SubnetsCfg
from .ds_backbone import DSBackboneMixin
from .pretrained import register_whole_loading, with_ds_layer_kinds

InitCfg = Union[dict, List[dict], None]

# mmpretrain ResNet's default initialisation
DEFAULT_INIT_CFG = [
    dict(type='Kaiming', layer=['Conv2d']),
    dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
]
# mmpretrain's threshold below which a block has no DropPath
DROP_PATH_EPS = 1e-5


def _ds_init_cfg(init_cfg: InitCfg) -> InitCfg:
    """``init_cfg`` with its torch layer kinds extended to the DS layers
    (:func:`~dsnet_mm.models.backbones.pretrained.with_ds_layer_kinds`),
    except that ``'Conv2d'`` stops naming torch's own ``nn.Conv2d``: the
    only one of a DS-ResNet is a gate's slimming head, which keeps the
    initialisation its ``head_init`` chose."""
    cfg = with_ds_layer_kinds(init_cfg)
    if isinstance(cfg, list):
        return [_ds_init_cfg(c) if 'layer' in c else c for c in cfg]
    if isinstance(cfg, dict) and 'layer' in cfg:
        layers = [cfg['layer']] if isinstance(cfg['layer'], str) \
            else cfg['layer']
        if 'DSConv2d' in layers:
            return dict(cfg, layer=[k for k in layers if k != 'Conv2d'])
    return cfg


# DS-Net's description of DS-ResNet: every stage slimmed by one ratio rho;
# our reading is rho in [0.25 : 0.25 : 1.0] (no DS-ResNet code was released
# and the paper's lists were not available to us:
# docs/reference/dsnet.md, "DS-ResNet")
DEFAULT_RATIOS = (0.25, 0.5, 0.75, 1.0)


class DSResBlock(nn.Module):
    """A residual block built from its class table of convs.

    The residual branch is ``len(kernels)`` convs, each followed by BN; all
    but the last run at the block's interior width (its own group) and are
    followed by ReLU and the interior's mask; the last widens to the stream.
    The shortcut is the identity when the block keeps its stream (same widest
    width, stride 1), so both sides of the add are the same width group.
    Otherwise it is a projection (1x1 conv with the block's stride, then BN;
    with ``avg_down`` an average pooling with the stride, then a stride-1
    conv and BN), sliced on both sides: its input width is read from the
    input, its output width is the block's stream group. After the add and
    the ReLU the stream group's mask is applied, so on the mask path of
    per-sample routing every image keeps only its own channels, on both
    sides of every later add. A routing that masks before the activation
    (``mask_position='before_act'`` of
    :class:`~dsnet_mm.models.routing.MaskedRouting`) masks every conv's and
    BN's output instead, the projection's included, so both sides of the add
    arrive masked.

    The layer names are mmpretrain's (``conv1``, ``bn1`` .., ``downsample.0``
    ..), and so are ``norm1`` .. (the BNs), ``style``, ``dilation``,
    ``with_cp`` and ``drop_path``.

    Args:
        in_channels (int): Widest input width.
        out_channels (int): Widest output width (the stream).
        stride (int): Stride of the block.
        group (str): Width group of the output stream.
        mid_group (str): Width group of the block's interior.
        num_stats (int): BN statistics rows (sub-networks + largest).
        se (bool): Start with an SE on the block input. Defaults to False.
        gate (dict, optional): ``DSGate`` keyword arguments (``num_choices``,
            ``features``) if that SE is the gate's attention head (the block
            holds the gate). Defaults to None.
        se_ratio (float): Squeeze ratio of the SE. Defaults to 0.25.
        expansion (int, optional): Widest stream / widest interior; None is
            the class's. Defaults to None.
        dilation (int): Dilation of the first 3x3 conv. Defaults to 1.
        style (str): ``'pytorch'`` (a bottleneck's stride on its 3x3 conv)
            or ``'caffe'`` (on its first 1x1 conv). Defaults to
            ``'pytorch'``.
        avg_down (bool): Downsample the projection shortcut by average
            pooling before a stride-1 conv. Defaults to False.
        with_cp (bool): Recompute the block in the backward pass (activation
            checkpointing) instead of storing its activations. Defaults to
            False.
        drop_path_rate (float): Stochastic depth rate of the residual
            branch. Defaults to 0.
        bn_kwargs (dict, optional): ``eps`` / ``momentum`` of the BNs.
            Defaults to None.
    """

    expansion = 1  # widest stream / widest interior (the class's default)
    kernels: Tuple[int, ...] = (3, 3)  # kernel size of each conv
    stride_at = 0  # which conv has the block's stride (style 'pytorch')
    caffe_stride_at = 0  # the same in style 'caffe'

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int,
                 group: str,
                 mid_group: str,
                 num_stats: int,
                 se: bool = False,
                 gate: Optional[dict] = None,
                 se_ratio: float = 0.25,
                 expansion: Optional[int] = None,
                 dilation: int = 1,
                 style: str = 'pytorch',
                 avg_down: bool = False,
                 with_cp: bool = False,
                 drop_path_rate: float = 0.0,
                 bn_kwargs: Optional[dict] = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.expansion = expansion or type(self).expansion
        self.mid_channels = out_channels // self.expansion
        self.stride = stride
        self.dilation = dilation
        self.style = style
        self.with_cp = with_cp
        self.group = group
        self.mid_group = mid_group
        bn_kwargs = bn_kwargs or {}
        self.se = None
        if gate:
            self.se = DSGate(in_channels, se_ratio=se_ratio, **gate)
        elif se:
            self.se = DSSqueezeExcite(in_channels, se_ratio)
        last = len(self.kernels)
        stride_at = self.stride_at if style == 'pytorch' \
            else self.caffe_stride_at
        dilate_at = self.kernels.index(3)
        width = in_channels
        for k, kernel in enumerate(self.kernels):
            out = out_channels if k == last - 1 else self.mid_channels
            self.add_module(
                f'conv{k + 1}',
                DSConv2d(width, out, kernel,
                         stride if k == stride_at else 1,
                         dilation=dilation if k == dilate_at else 1))
            self.add_module(f'bn{k + 1}',
                            DSBatchNorm2d(out, num_stats, **bn_kwargs))
            width = out
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            layers: List[nn.Module] = []
            if avg_down and stride != 1:
                layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True,
                                           count_include_pad=False))
            layers += [
                DSConv2d(in_channels, out_channels, 1,
                         1 if layers else stride),
                DSBatchNorm2d(out_channels, num_stats, **bn_kwargs)
            ]
            self.downsample = nn.ModuleList(layers)
        self.relu = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path_rate) \
            if drop_path_rate > DROP_PATH_EPS else nn.Identity()

    @property
    def norm1(self) -> DSBatchNorm2d:
        """mmpretrain's name of ``bn1``."""
        return self.bn1

    @property
    def norm2(self) -> DSBatchNorm2d:
        """mmpretrain's name of ``bn2``."""
        return self.bn2

    @property
    def last_norm(self) -> DSBatchNorm2d:
        """The BN before the add (zeroed by ``zero_init_residual``)."""
        return getattr(self, f'bn{len(self.kernels)}')

    @property
    def projection(self) -> Tuple[Optional[nn.Module], DSConv2d,
                                  DSBatchNorm2d]:
        """(pooling or None, conv, BN) of the projection shortcut."""
        *pool, conv, bn = self.downsample
        return (pool[0] if pool else None), conv, bn

    def forward_residual(self, x: torch.Tensor,
                         spec: SubnetSpec) -> torch.Tensor:
        """The residual branch up to its last BN, at ``spec``'s widths."""
        last = len(self.kernels)
        for k in range(1, last):
            conv, bn = getattr(self, f'conv{k}'), getattr(self, f'bn{k}')
            x = self.relu(conv.forward_bn(
                x, bn, spec.stats, spec[self.mid_group],
                mask=spec.pre_act_mask(self.mid_group)))
            x = spec.mask(x, self.mid_group)
        conv, bn = getattr(self, f'conv{last}'), self.last_norm
        return conv.forward_bn(x, bn, spec.stats, spec[self.group],
                               mask=spec.pre_act_mask(self.group))

    def _body(self, x: torch.Tensor, spec: SubnetSpec) -> torch.Tensor:
        identity = x
        if self.downsample is not None:
            pool, conv, bn = self.projection
            identity = conv.forward_bn(
                x if pool is None else pool(x), bn, spec.stats,
                spec[self.group], mask=spec.pre_act_mask(self.group))
        out = self.drop_path(self.forward_residual(x, spec))
        out = self.relu(out + identity)
        return spec.mask(out, self.group)

    def forward_body(self, x: torch.Tensor, spec: SubnetSpec) -> torch.Tensor:
        """The block after its SE: both branches, the add and the mask."""
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._body, x, spec, use_reentrant=False)
        return self._body(x, spec)

    def forward(self, x: torch.Tensor, spec: SubnetSpec) -> torch.Tensor:
        if self.se is not None:
            x = self.se(x)  # a gate's attention head only: a fixed subnet
        return self.forward_body(x, spec)

    def forward_gate(self, x: torch.Tensor, spec: SubnetSpec
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Through the gate: (input scaled by its attention, logits)."""
        return self.se.forward_gate(x)

    def forward_after_gate(self, x: torch.Tensor,
                           spec: SubnetSpec) -> torch.Tensor:
        return self.forward_body(x, spec)


class DSBasicBlock(DSResBlock):
    """ResNet basic block: 3x3 conv (with the stride), 3x3 conv."""

    expansion = 1
    kernels = (3, 3)
    stride_at = 0
    caffe_stride_at = 0


class DSBottleneck(DSResBlock):
    """ResNet bottleneck: 1x1 reduce, 3x3, 1x1 expand; both inner convs run
    at the interior width. The stride is on the 3x3 conv (``'pytorch'``
    style) or on the first 1x1 (``'caffe'``)."""

    expansion = 4
    kernels = (1, 3, 1)
    stride_at = 1
    caffe_stride_at = 0

    @property
    def norm3(self) -> DSBatchNorm2d:
        """mmpretrain's name of ``bn3``."""
        return self.bn3


class DSConvModule(nn.Module):
    """Conv, BN and ReLU at one width group: a layer of the deep stem,
    named as mmcv's ``ConvModule`` (``conv``, ``bn``, ``activate``).

    Args:
        in_channels (int): Widest input width.
        out_channels (int): Widest output width.
        stride (int): Stride of the 3x3 conv.
        group (str): Width group of the output.
        num_stats (int): BN statistics rows; a forward without a
            sub-network runs the last (the largest architecture's).
        bn_kwargs (dict, optional): ``eps`` / ``momentum`` of the BN.
            Defaults to None.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 group: str, num_stats: int,
                 bn_kwargs: Optional[dict] = None) -> None:
        super().__init__()
        self.group = group
        self.conv = DSConv2d(in_channels, out_channels, 3, stride)
        self.bn = DSBatchNorm2d(out_channels, num_stats, **(bn_kwargs or {}))
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor,
                spec: Optional[SubnetSpec] = None) -> torch.Tensor:
        if spec is None:  # the largest architecture
            return self.activate(self.conv.forward_bn(
                x, self.bn, self.bn.num_subnets - 1))
        x = self.activate(self.conv.forward_bn(
            x, self.bn, spec.stats, spec[self.group],
            mask=spec.pre_act_mask(self.group)))
        return spec.mask(x, self.group)


@MODELS.register_module()
class DSResNet(DSBackboneMixin, BaseBackbone):
    """Dynamic slimmable ResNet (DS-Net, CVPR 2021; DS-Net++, TPAMI).

    mmpretrain's ``ResNet`` with every conv and BN sliced: it takes every
    argument of ``ResNet`` with its meaning and default (those that cannot
    apply to a supernet are refused, saying why), and at full width it is
    that network, layer for layer and under the same state-dict names
    (``conv1``, ``bn1`` or the deep stem's ``stem.0.conv`` ..,
    ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...). A checkpoint of the
    static network (mmpretrain's, torchvision's or timm's layout) loads
    into it directly, whole or not at all (see **Loading**).
    :class:`DSResNet_CIFAR`, :class:`DSResNetV1c` and :class:`DSResNetV1d`
    stand in for mmpretrain's ``ResNet_CIFAR``, ``ResNetV1c`` and
    ``ResNetV1d``.

    **Width groups.** Every block of a stage adds into one stream, so a
    stage's stream is one group (``'layer1'`` .. ``'layer4'``); each block's
    interior is its own group (``'layer2.0'``: the mid channels of its inner
    convs); the stem is ``'stem'`` (a deep stem's first two convs are
    ``'stem.0'`` and ``'stem.1'``). A stage whose first block keeps its
    input's stream (identity shortcut: stride 1 and equal widest width, as
    ResNet-18/34's ``layer1``) has no group of its own and continues its
    input's (``'stem'``). Projection shortcuts are sliced on both sides.

    **Sub-networks.** Either a uniform list of slimming ``ratios`` (sub-network
    ``k`` runs every group at ``round(ratios[k] * widest)``), optionally with
    some stages held at one ratio in every sub-network (``fixed_ratios``, e.g.
    the stages before a gate, which the gate's window must share), or explicit
    ``subnets`` (each group its own width, a list or a ladder, see
    :class:`~dsnet_mm.models.subnet.SubnetSpace`). The ``largest``
    architecture (every group at its widest) is the in-place teacher.

    **Gate.** ``gate=dict(stage='layer3', window=(start, size))`` puts the
    double-headed gate at the entry of the stage's first block: its attention
    head scales the stream entering the stage (read by both branches of that
    block), and its slimming head picks the sub-network of the window that
    runs the rest. Every group before the stage must be the same across the
    window. A ResNet has no SE of its own to become the attention head (as
    DS-MobileNetV1's do), so the Stage I supernet carries that SE already:
    ``se_stage='layer3'`` in Stage I, and Stage II (``gate`` on the same
    stage) adds only the slimming head.

    **Loading.** Every state-dict load (``init_cfg=dict(type='Pretrained',
    ...)``, mmengine's ``load_from``, ``load_state_dict``) takes a checkpoint
    of this supernet or of the static ResNet: a static BN's running mean and
    variance go to every sub-network's statistics row (exact for the
    largest; recalibrate the others with ``tools/calibrate_bn.py``), and a
    timm deep stem (``conv1.0`` .. ``conv1.6``, ``bn1``) is renamed to
    mmpretrain's ``stem.*``. Any key left unmatched on either side, or of
    another shape, is an error naming it, except under ``unmatched_keys``
    (see :mod:`~dsnet_mm.models.backbones.pretrained`).

    Args:
        depth (int): 18, 34 (basic blocks), 50, 101 or 152 (bottlenecks).
        in_channels (int): Image channels. Defaults to 3.
        stem_channels (int): Widest stem width. Defaults to 64.
        base_channels (int): Widest interior width of the first stage (the
            others double per stage). Defaults to 64.
        expansion (int, optional): Widest stream / widest interior of the
            blocks; None is the block's (1 for basic blocks, which allow
            only 1; 4 for bottlenecks). Defaults to None.
        num_stages (int): Stages, 1 to 4 (the first ``num_stages`` of the
            depth's). Defaults to 4.
        strides (Sequence[int]): Stride of each stage's first block.
            Defaults to ``(1, 2, 2, 2)``.
        dilations (Sequence[int]): Dilation of each stage's 3x3 convs (the
            first of a basic block). Defaults to ``(1, 1, 1, 1)``.
        out_indices (Sequence[int] | int): Stages whose outputs are
            returned (any sequence, e.g. a ``range``; negative counts from
            the last). Defaults to ``(3, )``.
        style (str): ``'pytorch'`` (a bottleneck's stride on its 3x3 conv)
            or ``'caffe'`` (on its first 1x1 conv). Defaults to
            ``'pytorch'``.
        deep_stem (bool): Three 3x3 convs (``stem.0`` .. ``stem.2``, the
            first with stride 2) instead of the 7x7 conv. Defaults to False.
        avg_down (bool): Projection shortcuts that downsample by average
            pooling before a stride-1 conv. Defaults to False.
        frozen_stages (int): Freeze the stem (0) and stages 1..k (k>0) in
            train mode; -1 freezes nothing. Defaults to -1.
        conv_cfg (dict, optional): Only None (or ``dict(type='Conv2d')``):
            the convs are sliced :class:`~dsnet_mm.ops.DSConv2d`.
            Defaults to None.
        norm_cfg (dict): ``dict(type='BN')``, optionally with
            ``requires_grad`` (False freezes every BN's affine parameters),
            ``eps`` and ``momentum``: the BNs are
            :class:`~dsnet_mm.ops.DSBatchNorm2d`, one statistics row per
            sub-network. Defaults to ``dict(type='BN', requires_grad=True)``.
        norm_eval (bool): Keep every BN in eval mode while training.
            Defaults to False.
        with_cp (bool): Activation checkpointing of every block (recomputed
            in the backward pass). Defaults to False.
        zero_init_residual (bool): Start the last BN of every block at zero
            (each block starts as its shortcut), at build and again after
            ``init_weights`` unless ``init_cfg`` is a ``Pretrained`` dict.
            Defaults to True.
        init_cfg (dict | list, optional): mmengine initialisation configs;
            a ``layer`` naming a torch layer kind (``'Conv2d'``,
            ``'BatchNorm2d'``, ``'Linear'``) applies to the DS layers of
            that kind. Defaults to mmpretrain's: Kaiming (fan-out) on the
            convs, BN weights 1.
        drop_path_rate (float): Stochastic depth of the residual branches,
            rising linearly from 0 to this over the blocks. Defaults to 0.
        stem (str): ``'imagenet'`` (7x7 stride-2 conv or deep stem, then 3x3
            stride-2 max pooling) or ``'cifar'`` (3x3 stride-1 conv, no
            pooling, as mmpretrain's ``ResNet_CIFAR``). Defaults to
            ``'imagenet'``.
        ratios (Sequence[float], optional): Slimming ratios in (0, 1],
            increasing: one sub-network each. Defaults to
            ``(0.25, 0.5, 0.75, 1.0)`` when ``subnets`` is not given.
        fixed_ratios (dict, optional): ``{stage: ratio}`` for stages
            (``'stem'``, ``'layer1'`` ..) that stay at one ratio in every
            sub-network; a stage's stream and interiors follow its entry.
            Defaults to None.
        subnets (dict | list, optional): Explicit widths instead of ratios.
            Defaults to None.
        se_stage (str, optional): A stage whose first block starts with an
            SE on its input: the attention head of the gate that Stage II
            puts there. Defaults to None (the gate's stage, if any).
        gate (dict, optional): ``dict(stage=..., window=(start, size))``.
            Defaults to None (no gate).
        se_ratio (float): Squeeze ratio of that SE / gate, of the widest
            stage input. Defaults to 0.25.
        unmatched_keys (Sequence[str], optional): Key prefixes that a loaded
            checkpoint may lack or hold beyond this backbone (e.g.
            ``['fc.']`` for torchvision's classifier). None allows the SE /
            gate of ``se_stage`` (``'layer3.0.se.'``), which a static ResNet
            does not have. Defaults to None.
    """

    arch_settings = {
        18: (DSBasicBlock, (2, 2, 2, 2)),
        34: (DSBasicBlock, (3, 4, 6, 3)),
        50: (DSBottleneck, (3, 4, 6, 3)),
        101: (DSBottleneck, (3, 4, 23, 3)),
        152: (DSBottleneck, (3, 8, 36, 3)),
    }
    stems = ('imagenet', 'cifar')
    styles = ('pytorch', 'caffe')
    norm_types = ('BN', 'BN2d')

    def __init__(self,
                 depth: int,
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 expansion: Optional[int] = None,
                 num_stages: int = 4,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 out_indices: Union[int, Sequence[int]] = (3, ),
                 style: str = 'pytorch',
                 deep_stem: bool = False,
                 avg_down: bool = False,
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 zero_init_residual: bool = True,
                 init_cfg: InitCfg = DEFAULT_INIT_CFG,
                 drop_path_rate: float = 0.0,
                 *,
                 stem: str = 'imagenet',
                 ratios: Optional[Sequence[float]] = None,
                 fixed_ratios: Optional[Mapping[str, float]] = None,
                 subnets: Optional[SubnetsCfg] = None,
                 se_stage: Optional[str] = None,
                 gate: Optional[dict] = None,
                 se_ratio: float = 0.25,
                 unmatched_keys: Optional[Sequence[str]] = None) -> None:
        super().__init__(_ds_init_cfg(init_cfg))
        check_choice('depth', depth, sorted(self.arch_settings))
        check_choice('stem', stem, self.stems)
        check_choice('style', style, self.styles)
        for field, value in (('deep_stem', deep_stem),
                             ('avg_down', avg_down), ('with_cp', with_cp),
                             ('zero_init_residual', zero_init_residual)):
            check_bool(field, value)
        if deep_stem and stem != 'imagenet':
            raise ValueError(
                f"deep_stem=True replaces the 7x7 conv of stem='imagenet'; "
                f'the {stem!r} stem has none (mmpretrain\'s ResNet_CIFAR '
                'refuses it too): set deep_stem=False')
        block, all_blocks = self.arch_settings[depth]
        check_int('num_stages', num_stages, 1, len(all_blocks))
        stage_blocks = all_blocks[:num_stages]
        check_ints('strides', strides, 1, length=num_stages)
        check_ints('dilations', dilations, 1, length=num_stages)
        check_int('stem_channels', stem_channels, 2 if deep_stem else 1)
        check_int('base_channels', base_channels, 1)
        expansion = self._check_expansion(block, expansion)
        bn_kwargs = self._check_norm_cfg(norm_cfg)
        self._check_conv_cfg(conv_cfg)
        check_float('drop_path_rate', drop_path_rate, 0, 1, high_open=True)
        if isinstance(out_indices, Sequence) and \
                not isinstance(out_indices, str):
            out_indices = tuple(out_indices)
        self.out_indices = self._check_stage_args(
            num_stages, out_indices, frozen_stages, in_channels, norm_eval)
        self.depth = depth
        self.in_channels = in_channels
        self.stem_channels = stem_channels
        self.base_channels = base_channels
        self.expansion = expansion
        self.num_stages = num_stages
        self.stage_blocks = stage_blocks
        self.strides = tuple(strides)
        self.dilations = tuple(dilations)
        self.style = style
        self.deep_stem = deep_stem
        self.avg_down = avg_down
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.with_cp = with_cp
        self.zero_init_residual = zero_init_residual
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.res_layers = [f'layer{i + 1}' for i in range(num_stages)]

        # pass 1: width groups, their widest widths and owning stages
        max_widths = dict(stem=stem_channels)
        owner = dict(stem='stem')
        if deep_stem:
            for g in ('stem.0', 'stem.1'):
                max_widths[g], owner[g] = stem_channels // 2, 'stem'
        groups_before: List[List[str]] = []
        plan = []  # (in width, out width, stream group) per stage
        width, group = stem_channels, 'stem'
        for i, name in enumerate(self.res_layers):
            groups_before.append(list(max_widths))
            out_width = base_channels * 2**i * expansion
            if strides[i] != 1 or width != out_width:
                group = name
                max_widths[group], owner[group] = out_width, name
            for j in range(stage_blocks[i]):
                max_widths[f'{name}.{j}'] = out_width // expansion
                owner[f'{name}.{j}'] = name
            plan.append((width, out_width, group))
            width = out_width
        self.feat_dim = width

        if subnets is not None:
            if ratios is not None or fixed_ratios is not None:
                raise ValueError(
                    'give either subnets (explicit widths) or ratios / '
                    'fixed_ratios (slimming ratios), not both')
        else:
            subnets = self._ratio_subnets(
                DEFAULT_RATIOS if ratios is None else ratios,
                {} if fixed_ratios is None else fixed_ratios, max_widths,
                owner)
        self.space = SubnetSpace(max_widths, subnets)
        self._active = self.space.largest
        self.gate_stage, self.window, gate_kwargs = self._check_gate(
            gate, self.res_layers, groups_before)
        se_index = self.gate_stage
        if se_stage is not None:
            check_choice('se_stage', se_stage, self.res_layers)
            if gate is not None and se_stage != gate['stage']:
                raise ValueError(
                    f'se_stage={se_stage!r} must be the stage of the gate '
                    f"({gate['stage']!r}), whose attention head it is")
            se_index = self.res_layers.index(se_stage)

        # pass 2: the layers
        num_stats = self.space.num_stats
        if deep_stem:
            half = stem_channels // 2
            self.stem = nn.Sequential(
                DSConvModule(in_channels, half, 2, 'stem.0', num_stats,
                             bn_kwargs),
                DSConvModule(half, half, 1, 'stem.1', num_stats, bn_kwargs),
                DSConvModule(half, stem_channels, 1, 'stem', num_stats,
                             bn_kwargs))
        elif stem == 'imagenet':
            self.conv1 = DSConv2d(in_channels, stem_channels, 7, 2)
        else:
            self.conv1 = DSConv2d(in_channels, stem_channels, 3, 1)
        if not deep_stem:
            self.bn1 = DSBatchNorm2d(stem_channels, num_stats, **bn_kwargs)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) \
            if stem == 'imagenet' else nn.Identity()
        # stochastic depth rising over every block of the depth's stages
        rates = torch.linspace(0, drop_path_rate, sum(all_blocks)).tolist()
        for i, (name, (width, out_width, group)) in enumerate(
                zip(self.res_layers, plan)):
            blocks = nn.ModuleList()
            for j in range(stage_blocks[i]):
                first = j == 0 and i == se_index
                blocks.append(
                    block(width, out_width, strides[i] if j == 0 else 1,
                          group, f'{name}.{j}', num_stats, se=first,
                          gate=gate_kwargs if first else None,
                          se_ratio=se_ratio, expansion=expansion,
                          dilation=dilations[i], style=style,
                          avg_down=avg_down, with_cp=with_cp,
                          drop_path_rate=rates.pop(0),
                          bn_kwargs=bn_kwargs))
                width = out_width
            self.add_module(name, blocks)
        if not norm_cfg.get('requires_grad', True):
            for m in self.modules():
                if isinstance(m, DSBatchNorm2d):
                    for p in m.parameters():
                        p.requires_grad = False
        if zero_init_residual:
            self._zero_init_residual()
        self._freeze_stages()
        if unmatched_keys is None:
            unmatched_keys = [] if se_index is None \
                else [f'{self.res_layers[se_index]}.0.se.']
        register_whole_loading(self, convert_static_resnet, unmatched_keys)

    # --- argument checks -------------------------------------------------
    @staticmethod
    def _check_expansion(block: type, expansion: Optional[int]) -> int:
        if expansion is None:
            return block.expansion
        check_int('expansion', expansion, 1)
        if block is DSBasicBlock and expansion != 1:
            raise ValueError(
                f'expansion={expansion} does not apply to the basic blocks '
                'of ResNet-18/34, whose two convs share one width: use '
                'expansion=None (or 1)')
        return expansion

    @classmethod
    def _check_norm_cfg(cls, norm_cfg: dict) -> dict:
        """The BN keyword arguments of ``norm_cfg``."""
        check_type('norm_cfg', norm_cfg, dict, "a dict such as dict(type='BN')")
        check_keys('norm_cfg', norm_cfg, ('type', ),
                   ('requires_grad', 'eps', 'momentum'))
        if norm_cfg['type'] in ('SyncBN', 'MMSyncBN', 'TorchSyncBN'):
            raise ValueError(
                f"norm_cfg.type={norm_cfg['type']!r}: the BNs of a DS "
                'backbone are DSBatchNorm2d, which keep one statistics row '
                'per sub-network and do not synchronise them across GPUs: '
                "use norm_cfg=dict(type='BN')")
        if norm_cfg['type'] not in cls.norm_types:
            raise ValueError(
                f"norm_cfg.type={norm_cfg['type']!r} cannot apply: the "
                'norms of a DS backbone are DSBatchNorm2d (one statistics '
                "row per sub-network); allowed: {list(cls.norm_types)}")
        check_bool('norm_cfg.requires_grad',
                   norm_cfg.get('requires_grad', True))
        return {k: norm_cfg[k] for k in ('eps', 'momentum') if k in norm_cfg}

    @staticmethod
    def _check_conv_cfg(conv_cfg: Optional[dict]) -> None:
        if conv_cfg is None or conv_cfg == dict(type='Conv2d') or \
                conv_cfg == dict(type='Conv'):
            return
        raise ValueError(
            f'conv_cfg={conv_cfg!r} cannot apply: the convs of a DS '
            'backbone are DSConv2d, sliced to each sub-network\'s widths; '
            'use conv_cfg=None')

    @staticmethod
    def _ratio_subnets(ratios: Sequence[float], fixed: Mapping[str, float],
                       max_widths: Dict[str, int],
                       owner: Dict[str, str]) -> List[Dict[str, int]]:
        """Explicit widths of the uniform ratio list."""
        check_type('ratios', ratios, (list, tuple),
                   'a list of slimming ratios')
        ratios = list(ratios)
        for k, r in enumerate(ratios):
            check_float(f'ratios[{k}]', r, 0, 1, low_open=True)
        if not ratios or any(a >= b for a, b in zip(ratios, ratios[1:])):
            raise ValueError('ratios must be increasing slimming ratios in '
                             f'(0, 1], got {ratios!r}')
        stages = sorted(set(owner.values()), key=list(owner.values()).index)
        check_type('fixed_ratios', fixed, Mapping,
                   'a dict {stage: ratio}')
        unknown = [s for s in fixed if s not in stages]
        if unknown:
            raise ValueError(f'fixed_ratios names unknown stage(s) {unknown};'
                             f' allowed: {stages}')
        for s, r in fixed.items():
            check_float(f'fixed_ratios.{s}', r, 0, 1, low_open=True)
        if len(ratios) > 1 and set(fixed) == set(stages):
            raise ValueError(
                f'fixed_ratios fixes every stage {stages}: the ratios '
                f'{ratios} would give identical sub-networks')
        return [{
            g: max(1, int(fixed.get(owner[g], r) * w + 0.5))
            for g, w in max_widths.items()
        } for r in ratios]

    # --- forward ---------------------------------------------------------
    @property
    def norm1(self) -> DSBatchNorm2d:
        """mmpretrain's name of the stem's BN ``bn1`` (not with a deep
        stem)."""
        return self.bn1

    def stem_layers(self) -> List[Tuple[str, DSConv2d, DSBatchNorm2d, str]]:
        """(name, conv, BN, width group) of each conv of the stem."""
        if self.deep_stem:
            return [(f'stem.{i}', m.conv, m.bn, m.group)
                    for i, m in enumerate(self.stem)]
        return [('conv1', self.conv1, self.bn1, 'stem')]

    def _forward_stem(self, x: torch.Tensor, spec: SubnetSpec) -> torch.Tensor:
        for _, conv, bn, group in self.stem_layers():
            x = F.relu(conv.forward_bn(x, bn, spec.stats, spec[group],
                                       mask=spec.pre_act_mask(group)),
                       inplace=True)
            x = spec.mask(x, group)
        return self.maxpool(x)

    def _stages(self) -> List[nn.Module]:
        return [getattr(self, name) for name in self.res_layers]

    def describe_channels(self, axes) -> str:
        """Fill a :class:`~dsnet_mm.search.channels.ChannelAxes` with every
        tensor axis of each width group (a stage's stream runs through every
        block's last conv, projection and the next blocks' first convs);
        returns the output's group."""
        group = None
        for name, conv, _, out in self.stem_layers():
            conv_name, bn_name = (f'{name}.conv', f'{name}.bn') \
                if self.deep_stem else ('conv1', 'bn1')
            axes.conv(conv_name, conv, group, out)
            axes.bn(bn_name, out)
            group = out
        for name in self.res_layers:
            for j, block in enumerate(getattr(self, name)):
                prefix, in_group = f'{name}.{j}', group
                if block.se is not None:
                    axes.se(f'{prefix}.se', block.se, in_group)
                last = len(block.kernels)
                width = in_group
                for k in range(1, last + 1):
                    out = block.group if k == last else block.mid_group
                    axes.conv(f'{prefix}.conv{k}',
                              getattr(block, f'conv{k}'), width, out)
                    axes.bn(f'{prefix}.bn{k}', out)
                    width = out
                if block.downsample is not None:
                    n = len(block.downsample)
                    axes.conv(f'{prefix}.downsample.{n - 2}',
                              block.downsample[n - 2], in_group, block.group)
                    axes.bn(f'{prefix}.downsample.{n - 1}', block.group)
                group = block.group
        return group

    # --- mmpretrain conventions ----------------------------------------
    def _zero_init_residual(self) -> None:
        for m in self.modules():
            if isinstance(m, DSResBlock):
                nn.init.zeros_(m.last_norm.weight)
                nn.init.zeros_(m.last_norm.bias)

    def init_weights(self) -> None:
        """mmengine's initialisation (see ``init_cfg``; a ``Pretrained``
        checkpoint loads whole or fails), then, as mmpretrain's ``ResNet``,
        the last BN of every block zeroed (``zero_init_residual``) unless
        ``init_cfg`` is a ``Pretrained`` dict."""
        super().init_weights()
        if isinstance(self.init_cfg, dict) and \
                self.init_cfg.get('type') == 'Pretrained':
            return
        if self.zero_init_residual:
            self._zero_init_residual()

    def get_layer_depth(self, param_name: str,
                        prefix: str = '') -> Tuple[int, int]:
        """(layer depth, number of layers) of a parameter, for layer-wise
        learning-rate decay, as mmpretrain's ``ResNet``: the stem is layer
        0, ``layer1`` layer 1, the blocks of ``layer2`` and ``layer3`` in
        groups of 2 and 3 (4 and 4 for ResNet-152), ``layer4`` the last
        backbone layer, and anything outside ``prefix`` (the head) after
        it.

        Raises:
            NotImplementedError: for stage layouts mmpretrain does not
                group (ResNet-18, fewer than 4 stages).
        """
        groups = {(4, 6): (2, 3), (4, 23): (2, 3), (8, 36): (4, 4)}
        key = tuple(self.stage_blocks[1:3])
        if len(self.stage_blocks) != 4 or key not in groups:
            raise NotImplementedError(
                f'get_layer_depth groups the blocks of ResNet-34/50/101/152 '
                f'(4 stages) as mmpretrain does; this backbone has stages '
                f'{list(self.stage_blocks)}')
        per2, per3 = groups[key]
        n2, n3 = -(-key[0] // per2), -(-key[1] // per3)
        last = 2 + n2 + n3
        num_layers = last + 2
        if not param_name.startswith(prefix):
            return last + 1, num_layers
        name = param_name[len(prefix):]
        if not name.startswith('layer'):
            return 0, num_layers
        stage, block = name.split('.')[:2]
        stage, block = int(stage[len('layer'):]), int(block)
        depth = {1: 1, 2: 2 + block // per2, 3: 2 + n2 + block // per3,
                 4: last}[stage]
        return depth, num_layers

    def _freeze_stages(self) -> None:
        modules: List[nn.Module] = []
        if self.frozen_stages >= 0:
            modules += [self.stem] if self.deep_stem \
                else [self.conv1, self.bn1]
        modules += [getattr(self, n)
                    for n in self.res_layers[:max(self.frozen_stages, 0)]]
        for m in modules:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False


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


def convert_static_resnet(module: DSResNet, state: Dict[str, torch.Tensor],
                          prefix: str) -> None:
    """Turn the keys under ``prefix`` of a static ResNet's state dict into
    ``module``'s, in place: a timm deep stem (``conv1.0``, ``conv1.1``,
    ``conv1.3``, ``conv1.4``, ``conv1.6``, ``bn1``) renamed to
    ``stem.{0,1,2}.{conv,bn}``, and each static BN's running mean and
    variance (one row) repeated into every sub-network's row (a missing
    ``num_batches_tracked``, as in old torchvision files, counts 0). A
    supernet's own keys are left as they are."""
    if module.deep_stem and prefix + 'conv1.0.weight' in state:
        renames = {'conv1.0.': 'stem.0.conv.', 'conv1.1.': 'stem.0.bn.',
                   'conv1.3.': 'stem.1.conv.', 'conv1.4.': 'stem.1.bn.',
                   'conv1.6.': 'stem.2.conv.', 'bn1.': 'stem.2.bn.'}
        for key in [k for k in state if k.startswith(prefix)]:
            rest = key[len(prefix):]
            for old, new in renames.items():
                if rest.startswith(old):
                    state[prefix + new + rest[len(old):]] = state.pop(key)
                    break
    for name, m in module.named_modules():
        if not isinstance(m, DSBatchNorm2d):
            continue
        base = f'{prefix}{name}.'
        rows = m.num_subnets
        for stat in ('running_mean', 'running_var'):
            value = state.get(base + stat)
            if value is not None and value.dim() == 1:
                state[base + stat] = value.unsqueeze(0).repeat(rows, 1)
        count = state.get(base + 'num_batches_tracked')
        if count is not None and count.dim() == 0:
            state[base + 'num_batches_tracked'] = count.repeat(rows)
        elif count is None and base + 'running_mean' in state:
            state[base + 'num_batches_tracked'] = torch.zeros(
                rows, dtype=torch.long)

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-ResNet: dynamic slimmable ResNets (BasicBlock and Bottleneck), a
drop-in for mmpretrain's ``ResNet``, ``ResNet_CIFAR``, ``ResNetV1c`` and
``ResNetV1d``."""
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from dsnet_mm.ops import DSBatchNorm2d, DSConv2d
from dsnet_mm.ops.utils import (check_bool, check_choice, check_float,
                                check_int, check_ints)
from dsnet_mm.static import LayerBuilder
from ..routing import RunSpec
from ..subnet import SubnetSpace, SubnetSpec, SubnetsCfg
from .ds_backbone import StagedBackboneMixin
from .ds_resnet_blocks import (DSBasicBlock, DSBottleneck, DSConvModule,
                               DSResBlock)
from .ds_resnet_config import (DEFAULT_INIT_CFG, DEFAULT_RATIOS, InitCfg,
                               check_conv_cfg, check_expansion,
                               check_norm_cfg, convert_static_resnet,
                               ds_init_cfg, ratio_subnets)
from .pretrained import register_whole_loading

@MODELS.register_module()
class DSResNet(StagedBackboneMixin, BaseBackbone):
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
        super().__init__(ds_init_cfg(init_cfg))
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
        expansion = check_expansion(block, expansion)
        bn_kwargs = check_norm_cfg(norm_cfg, self.norm_types)
        check_conv_cfg(conv_cfg)
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
            subnets = ratio_subnets(
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

    def _forward_stem(self, x: torch.Tensor, spec: RunSpec) -> torch.Tensor:
        for _, conv, bn, group in self.stem_layers():
            x = F.relu(conv.forward_bn(x, bn, spec.stats, spec[group],
                                       mask=spec.pre_act_mask(group)),
                       inplace=True)
            x = spec.mask(x, group)
        return self.maxpool(x)

    def _stages(self) -> List[nn.Module]:
        return [getattr(self, name) for name in self.res_layers]

    def _static_stem(self, spec: SubnetSpec,
                     layers: LayerBuilder) -> Tuple[nn.Module, int]:
        stem, width = [], self.in_channels
        for _, conv, bn, group in self.stem_layers():
            stem += [layers.conv_bn(conv, bn, width, spec[group], spec.stats),
                     nn.ReLU(inplace=True)]
            width = spec[group]
        return nn.Sequential(*stem, self.maxpool), width

    def _describe_stem(self, axes) -> str:
        group = None
        for name, conv, _, out in self.stem_layers():
            conv_name, bn_name = (f'{name}.conv', f'{name}.bn') \
                if self.deep_stem else ('conv1', 'bn1')
            axes.conv(conv_name, conv, group, out)
            axes.bn(bn_name, out)
            group = out
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

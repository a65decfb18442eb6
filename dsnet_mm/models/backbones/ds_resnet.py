# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-ResNet: dynamic slimmable ResNets (BasicBlock and Bottleneck)."""
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from dsnet_mm.ops import DSBatchNorm2d, DSConv2d, DSSqueezeExcite
from dsnet_mm.ops.utils import (check_bool, check_choice, check_float,
                                check_int, check_ints, check_type)
from ..gates import DSGate
from ..subnet import SubnetSpace, SubnetSpec, SubnetsCfg
from .ds_backbone import DSBackboneMixin

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
    Otherwise it is a projection (1x1 conv with the block's stride, then BN),
    sliced on both sides: its input width is read from the input, its output
    width is the block's stream group. After the add and the ReLU the stream
    group's mask is applied, so on the mask path of per-sample routing every
    image keeps only its own channels, on both sides of every later add.
    A routing that masks before the activation (``mask_position=
    'before_act'`` of :class:`~dsnet_mm.models.routing.MaskedRouting`)
    masks every conv's and BN's output instead, the projection's included,
    so both sides of the add arrive masked.

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
    """

    expansion = 1  # widest stream / widest interior
    kernels: Tuple[int, ...] = (3, 3)  # kernel size of each conv
    stride_at = 0  # which conv has the block's stride

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int,
                 group: str,
                 mid_group: str,
                 num_stats: int,
                 se: bool = False,
                 gate: Optional[dict] = None,
                 se_ratio: float = 0.25) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.mid_channels = out_channels // self.expansion
        self.stride = stride
        self.group = group
        self.mid_group = mid_group
        self.se = None
        if gate:
            self.se = DSGate(in_channels, se_ratio=se_ratio, **gate)
        elif se:
            self.se = DSSqueezeExcite(in_channels, se_ratio)
        last = len(self.kernels) - 1
        width = in_channels
        for k, kernel in enumerate(self.kernels):
            out = out_channels if k == last else self.mid_channels
            self.add_module(
                f'conv{k + 1}',
                DSConv2d(width, out, kernel,
                         stride if k == self.stride_at else 1))
            self.add_module(f'bn{k + 1}', DSBatchNorm2d(out, num_stats))
            width = out
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.ModuleList([
                DSConv2d(in_channels, out_channels, 1, stride),
                DSBatchNorm2d(out_channels, num_stats)
            ])
        self.relu = nn.ReLU(inplace=True)

    @property
    def last_norm(self) -> DSBatchNorm2d:
        """The BN before the add (zeroed by ``zero_init_residual``)."""
        return getattr(self, f'bn{len(self.kernels)}')

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

    def forward_body(self, x: torch.Tensor, spec: SubnetSpec) -> torch.Tensor:
        """The block after its SE: both branches, the add and the mask."""
        identity = x
        if self.downsample is not None:
            conv, bn = self.downsample
            identity = conv.forward_bn(x, bn, spec.stats, spec[self.group],
                                       mask=spec.pre_act_mask(self.group))
        out = self.relu(self.forward_residual(x, spec) + identity)
        return spec.mask(out, self.group)

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


class DSBottleneck(DSResBlock):
    """ResNet bottleneck, ``pytorch`` style: 1x1 reduce, 3x3 (with the
    stride), 1x1 expand; both inner convs run at the interior width."""

    expansion = 4
    kernels = (1, 3, 1)
    stride_at = 1


@MODELS.register_module()
class DSResNet(DSBackboneMixin, BaseBackbone):
    """Dynamic slimmable ResNet (DS-Net, CVPR 2021; DS-Net++, TPAMI).

    mmpretrain's ``ResNet`` (``style='pytorch'``, stride on the 3x3 conv)
    with every conv and BN sliced: at full width it is that network, layer
    for layer and under the same state-dict names (``conv1``, ``bn1``,
    ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...), so its weights convert
    one to one (:func:`~dsnet_mm.converters.convert_mmpretrain_resnet`).

    **Width groups.** Every block of a stage adds into one stream, so a
    stage's stream is one group (``'layer1'`` .. ``'layer4'``); each block's
    interior is its own group (``'layer2.0'``: the mid channels of its inner
    convs); the stem is ``'stem'``. A stage whose first block keeps its
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

    Args:
        depth (int): 18, 34 (basic blocks), 50, 101 or 152 (bottlenecks).
        stem (str): ``'imagenet'`` (7x7 stride-2 conv and 3x3 stride-2 max
            pooling) or ``'cifar'`` (3x3 stride-1 conv, no pooling, as
            mmpretrain's ``ResNet_CIFAR``). Defaults to ``'imagenet'``.
        in_channels (int): Image channels. Defaults to 3.
        stem_channels (int): Widest stem width. Defaults to 64.
        base_channels (int): Widest interior width of the first stage (the
            others double per stage). Defaults to 64.
        strides (Sequence[int]): Stride of each stage's first block.
            Defaults to ``(1, 2, 2, 2)``.
        ratios (Sequence[float], optional): Slimming ratios in (0, 1],
            increasing: one sub-network each. Defaults to
            ``(0.25, 0.5, 0.75, 1.0)`` when ``subnets`` is not given.
        fixed_ratios (dict, optional): ``{stage: ratio}`` for stages
            (``'stem'``, ``'layer1'`` ..) that stay at one ratio in every
            sub-network; a stage's stream and interiors follow its entry.
            Defaults to None.
        subnets (dict | list, optional): Explicit widths instead of ratios.
            Defaults to None.
        out_indices (Sequence[int]): Stages whose outputs are returned
            (negative counts from the last). Defaults to ``(3, )``.
        frozen_stages (int): Freeze the stem (0) and stages 1..k (k>0) in
            train mode; -1 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep every BN in eval mode while training.
            Defaults to False.
        zero_init_residual (bool): Start the last BN's scale of every block
            at zero, so each block starts as its shortcut. Defaults to True.
        se_stage (str, optional): A stage whose first block starts with an
            SE on its input: the attention head of the gate that Stage II
            puts there. Defaults to None (the gate's stage, if any).
        gate (dict, optional): ``dict(stage=..., window=(start, size))``.
            Defaults to None (no gate).
        se_ratio (float): Squeeze ratio of that SE / gate, of the widest
            stage input. Defaults to 0.25.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    arch_settings = {
        18: (DSBasicBlock, (2, 2, 2, 2)),
        34: (DSBasicBlock, (3, 4, 6, 3)),
        50: (DSBottleneck, (3, 4, 6, 3)),
        101: (DSBottleneck, (3, 4, 23, 3)),
        152: (DSBottleneck, (3, 8, 36, 3)),
    }
    stems = ('imagenet', 'cifar')

    def __init__(self,
                 depth: int,
                 stem: str = 'imagenet',
                 in_channels: int = 3,
                 stem_channels: int = 64,
                 base_channels: int = 64,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 ratios: Optional[Sequence[float]] = None,
                 fixed_ratios: Optional[Mapping[str, float]] = None,
                 subnets: Optional[SubnetsCfg] = None,
                 out_indices: Sequence[int] = (3, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 zero_init_residual: bool = True,
                 se_stage: Optional[str] = None,
                 gate: Optional[dict] = None,
                 se_ratio: float = 0.25,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        check_choice('depth', depth, sorted(self.arch_settings))
        check_choice('stem', stem, self.stems)
        block, stage_blocks = self.arch_settings[depth]
        num_stages = len(stage_blocks)
        check_ints('strides', strides, 1, length=num_stages)
        check_int('stem_channels', stem_channels, 1)
        check_int('base_channels', base_channels, 1)
        check_bool('zero_init_residual', zero_init_residual)
        self.out_indices = self._check_stage_args(
            num_stages, out_indices, frozen_stages, in_channels, norm_eval)
        self.depth = depth
        self.in_channels = in_channels
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.res_layers = [f'layer{i + 1}' for i in range(num_stages)]

        # pass 1: width groups, their widest widths and owning stages
        max_widths = dict(stem=stem_channels)
        owner = dict(stem='stem')
        groups_before: List[List[str]] = []
        plan = []  # (in width, out width, stream group) per stage
        width, group = stem_channels, 'stem'
        for i, name in enumerate(self.res_layers):
            groups_before.append(list(max_widths))
            out_width = base_channels * 2**i * block.expansion
            if strides[i] != 1 or width != out_width:
                group = name
                max_widths[group], owner[group] = out_width, name
            for j in range(stage_blocks[i]):
                max_widths[f'{name}.{j}'] = out_width // block.expansion
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
        if stem == 'imagenet':
            self.conv1 = DSConv2d(in_channels, stem_channels, 7, 2)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = DSConv2d(in_channels, stem_channels, 3, 1)
            self.maxpool = nn.Identity()
        self.bn1 = DSBatchNorm2d(stem_channels, num_stats)
        self.relu = nn.ReLU(inplace=True)
        for i, (name, (width, out_width, group)) in enumerate(
                zip(self.res_layers, plan)):
            blocks = nn.ModuleList()
            for j in range(stage_blocks[i]):
                first = j == 0 and i == se_index
                blocks.append(
                    block(width, out_width, strides[i] if j == 0 else 1,
                          group, f'{name}.{j}', num_stats, se=first,
                          gate=gate_kwargs if first else None,
                          se_ratio=se_ratio))
                width = out_width
            self.add_module(name, blocks)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, DSResBlock):
                    nn.init.zeros_(m.last_norm.weight)
        self._freeze_stages()

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
    def _forward_stem(self, x: torch.Tensor, spec: SubnetSpec) -> torch.Tensor:
        x = self.relu(self.conv1.forward_bn(
            x, self.bn1, spec.stats, spec['stem'],
            mask=spec.pre_act_mask('stem')))
        return self.maxpool(spec.mask(x, 'stem'))

    def _stages(self) -> List[nn.Module]:
        return [getattr(self, name) for name in self.res_layers]

    def describe_channels(self, axes) -> str:
        """Fill a :class:`~dsnet_mm.search.channels.ChannelAxes` with every
        tensor axis of each width group (a stage's stream runs through every
        block's last conv, projection and the next blocks' first convs);
        returns the output's group."""
        axes.conv('conv1', self.conv1, None, 'stem')
        axes.bn('bn1', 'stem')
        group = 'stem'
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
                    axes.conv(f'{prefix}.downsample.0', block.downsample[0],
                              in_group, block.group)
                    axes.bn(f'{prefix}.downsample.1', block.group)
                group = block.group
        return group

    # --- mmpretrain conventions ----------------------------------------
    def _freeze_stages(self) -> None:
        modules: List[nn.Module] = []
        if self.frozen_stages >= 0:
            modules += [self.conv1, self.bn1]
        modules += [getattr(self, n)
                    for n in self.res_layers[:max(self.frozen_stages, 0)]]
        for m in modules:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

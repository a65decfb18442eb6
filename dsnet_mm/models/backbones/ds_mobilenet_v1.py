# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-MobileNetV1: the dynamic slimmable MobileNetV1 supernet of DS-Net."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS

from dsnet_mm.ops import DSBatchNorm2d, DSConv2d, DSSqueezeExcite
from dsnet_mm.ops.utils import (check_choice, check_int, check_ints,
                                check_keys, check_type)
from dsnet_mm.static import LayerBuilder, build_se
from ..gates import DSGate
from ..routing import MaskedRouting, RunSpec
from ..subnet import SubnetSpace, SubnetSpec, SubnetsCfg
from .ds_backbone import StagedBackboneMixin


class DSConvBNAct(nn.Module):
    """Sliced conv, per-sub-network BN and Swish, widened by one group."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int, group: str, num_stats: int) -> None:
        super().__init__()
        self.group = group
        self.conv = DSConv2d(in_channels, out_channels, kernel_size, stride)
        self.bn = DSBatchNorm2d(out_channels, num_stats)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor, spec: RunSpec) -> torch.Tensor:
        x = self.act(self.conv.forward_bn(
            x, self.bn, spec.stats, spec[self.group],
            mask=spec.pre_act_mask(self.group)))
        return spec.mask(x, self.group)

    def build_static(self, spec: SubnetSpec, width: int,
                     layers: LayerBuilder) -> Tuple[List[nn.Module], int]:
        """(conv-BN and Swish at ``spec``'s width built by ``layers``, that
        width)."""
        out = spec[self.group]
        return [layers.conv_bn(self.conv, self.bn, width, out, spec.stats),
                nn.SiLU(inplace=True)], out

    def describe_channels(self, axes, prefix: str,
                          in_group: Optional[str]) -> str:
        """The conv's and BN's axes (module ``prefix``); returns the output's
        group."""
        axes.conv(f'{prefix}.conv', self.conv, in_group, self.group)
        axes.bn(f'{prefix}.bn', self.group)
        return self.group


class DSDepthwiseSeparable(nn.Module):
    """MobileNetV1 block: dw3x3-BN-Swish, SE, pw1x1-BN-Swish (no residual).

    The depthwise part runs at the input width; the pointwise conv widens to
    the block's group width. In the gated block the SE is the double-headed
    gate, whose slimming head decides the width of the pointwise conv and of
    every later layer.

    Args:
        in_channels (int): Widest input width.
        out_channels (int): Widest output width.
        stride (int): Stride of the depthwise conv.
        in_group (str): Width group of the block's input.
        group (str): Width group of the block's output.
        num_stats (int): BN statistics rows (sub-networks + largest).
        se_ratio (float): SE squeeze ratio of the widest input.
        gate (dict, optional): ``DSGate`` keyword arguments (``num_choices``,
            ``features``) if the block holds the gate. Defaults to None.
        kernel_size (int): Stored kernel of the depthwise conv. Defaults
            to 3.
        kernel_group (str, optional): The group holding the depthwise
            kernel size of the sub-network (kernel slicing), or None (always
            the stored kernel). Defaults to None.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int,
                 in_group: str,
                 group: str,
                 num_stats: int,
                 se_ratio: float,
                 gate: Optional[dict] = None,
                 kernel_size: int = 3,
                 kernel_group: Optional[str] = None) -> None:
        super().__init__()
        self.in_group = in_group
        self.group = group
        self.kernel_group = kernel_group
        self.conv_dw = DSConv2d(
            in_channels, in_channels, kernel_size, stride, group_channels=1)
        self.bn1 = DSBatchNorm2d(in_channels, num_stats)
        self.se = DSGate(in_channels, se_ratio=se_ratio, **gate) \
            if gate else DSSqueezeExcite(in_channels, se_ratio)
        self.conv_pw = DSConv2d(in_channels, out_channels, 1)
        self.bn2 = DSBatchNorm2d(out_channels, num_stats)
        self.act = nn.SiLU(inplace=True)

    def forward_dw(self, x: torch.Tensor, spec: RunSpec) -> torch.Tensor:
        """Depthwise conv, BN and activation, at the input width and the
        sub-network's kernel. Under a routing whose window mixes kernels,
        each kernel runs and every image keeps its own's output."""
        group = self.kernel_group
        mask = spec.pre_act_mask(self.in_group)
        if group is not None and isinstance(spec, MaskedRouting) and \
                len({s[group] for s in spec.window}) > 1:
            kernels, weights = spec.choice_weights(group)
            x = sum(
                w[:, None, None, None] * self.act(self.conv_dw.forward_bn(
                    x, self.bn1, spec.stats, kernel_size=k, mask=mask))
                for k, w in zip(kernels, weights.unbind(1)))
        else:
            kernel = None if group is None else spec[group]
            x = self.act(self.conv_dw.forward_bn(
                x, self.bn1, spec.stats, kernel_size=kernel, mask=mask))
        return spec.mask(x, self.in_group)

    def forward_pw(self, x: torch.Tensor, spec: RunSpec) -> torch.Tensor:
        """Pointwise conv, BN and activation, widened to the block's group."""
        x = self.act(self.conv_pw.forward_bn(
            x, self.bn2, spec.stats, spec[self.group],
            mask=spec.pre_act_mask(self.group)))
        return spec.mask(x, self.group)

    def forward(self, x: torch.Tensor, spec: RunSpec) -> torch.Tensor:
        return self.forward_pw(self.se(self.forward_dw(x, spec)), spec)

    def forward_gate(self, x: torch.Tensor, spec: RunSpec
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Through the gate: (features after its attention, logits)."""
        return self.se.forward_gate(self.forward_dw(x, spec))

    def forward_after_gate(self, x: torch.Tensor,
                           spec: RunSpec) -> torch.Tensor:
        return self.forward_pw(x, spec)

    def build_static(self, spec: SubnetSpec, width: int,
                     layers: LayerBuilder) -> Tuple[List[nn.Module], int]:
        """The block at ``spec``'s widths and kernel, its input ``width``
        channels wide, built by ``layers``: (depthwise conv-BN, Swish, the
        SE or gate, pointwise conv-BN, Swish; the output width)."""
        out = spec[self.group]
        kernel = None if self.kernel_group is None \
            else spec[self.kernel_group]
        return [
            layers.conv_bn(self.conv_dw, self.bn1, width, width, spec.stats,
                           kernel),
            nn.SiLU(inplace=True),
            build_se(self.se, width, layers),
            layers.conv_bn(self.conv_pw, self.bn2, width, out, spec.stats),
            nn.SiLU(inplace=True)
        ], out

    def describe_channels(self, axes, prefix: str,
                          in_group: Optional[str]) -> str:
        """Every tensor axis of the block (module ``prefix``): the depthwise
        conv, its BN and the SE at the input's group, the pointwise conv
        and its BN at the block's; returns the output's group."""
        axes.conv(f'{prefix}.conv_dw', self.conv_dw, self.in_group,
                  self.in_group)
        axes.bn(f'{prefix}.bn1', self.in_group)
        axes.se(f'{prefix}.se', self.se, self.in_group)
        axes.conv(f'{prefix}.conv_pw', self.conv_pw, self.in_group,
                  self.group)
        axes.bn(f'{prefix}.bn2', self.group)
        return self.group


@MODELS.register_module()
class DSMobileNetV1(StagedBackboneMixin, BaseBackbone):
    """Dynamic slimmable MobileNetV1 (DS-Net, CVPR 2021).

    The supernet of the reference release: a 3x3 stem and five stages of
    depthwise-separable blocks, SE in every block, Swish everywhere except
    inside SE. Each stage (and the stem) is one width group. The 14 reference
    sub-networks keep the narrow early widths 16/32/48/96 and grow stage 4 as
    ``224 + 32k`` and stage 5 as ``736 + 32k`` (k = 0..13); the separate
    ``largest`` architecture (every group at its widest: 24/88/168/264/640/1152)
    is the in-place teacher. ``arch='cifar'`` is the same supernet for 32x32
    inputs (stride-1 stem and first stages).

    The active sub-network is held by the backbone (:meth:`set_subnet`,
    :meth:`subnet`) and passed explicitly to every layer in ``forward``; it
    persists across forwards and defaults to the largest.

    Args:
        arch (str | dict): ``'imagenet'``, ``'cifar'``, or a dict with keys
            ``stem`` (``(width, stride)``) and ``stages`` (a list of
            ``(group, widest width, blocks, stride)``). Defaults to
            ``'imagenet'``.
        subnets (dict | list, optional): The sub-network list, see
            :class:`~dsnet_mm.models.subnet.SubnetSpace`. Defaults to the
            architecture's reference list.
        in_channels (int): Image channels. Defaults to 3.
        se_ratio (float): SE squeeze ratio. Defaults to 0.25.
        out_indices (Sequence[int]): Stages whose outputs are returned
            (negative counts from the last). Defaults to ``(-1, )``.
        frozen_stages (int): Freeze the stem (0) and stages 1..k (k>0) in
            train mode; -1 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep every BN in eval mode while training.
            Defaults to False.
        gate (dict, optional): Place the double-headed gate in the first
            block of a stage: ``dict(stage='stage4', window=(start, size))``.
            The gate picks one of the ``size`` consecutive sub-networks from
            ``start`` on (the routing window: S/M/L models use different
            windows); every layer it precedes takes that sub-network's widths,
            so the window's sub-networks must agree on every earlier group.
            Defaults to None (no gate, e.g. Stage I).
        kernel_choices (dict, optional): Kernel slicing (DS-CNN++ of
            DS-Net++): ``dict(stage4=(3, 5), ...)`` gives the depthwise convs
            of those stages odd kernel choices, stored at the largest and
            sliced from its centre (see :class:`~dsnet_mm.ops.DSConv2d`).
            Each such stage gets the width group ``'<stage>.kernel'`` (a
            choice group of the space), which every sub-network sets; MAdds
            follow the kernel. Defaults to None (3x3 everywhere).
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """
    # (group, widest width, blocks, stride of the first block): the
    # reference supernet (docs/reference/dsnet.md, "DS-MobileNetV1 supernet")
    _stages = [('stage1', 88, 1, 1), ('stage2', 168, 2, 2),
               ('stage3', 264, 2, 2), ('stage4', 640, 6, 2),
               ('stage5', 1152, 2, 2)]
    arch_settings = {
        'imagenet': dict(stem=(24, 2), stages=_stages),
        # 32x32 inputs: stride-1 stem and last stage, 4x4 features at the end
        'cifar': dict(
            stem=(24, 1),
            stages=[s[:3] + (st, ) for s, st in zip(_stages, (1, 2, 2, 2, 1))]),
    }
    # DS-Net's 14 uniform sub-networks (docs/reference/dsnet.md)
    default_subnets = dict(
        smallest=dict(
            stem=16, stage1=32, stage2=48, stage3=96, stage4=224, stage5=736),
        widest=dict(
            stem=16, stage1=32, stage2=48, stage3=96, stage4=640, stage5=1152),
        num=14)

    def __init__(self,
                 arch: Union[str, dict] = 'imagenet',
                 subnets: Optional[SubnetsCfg] = None,
                 in_channels: int = 3,
                 se_ratio: float = 0.25,
                 out_indices: Sequence[int] = (-1, ),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 gate: Optional[dict] = None,
                 kernel_choices: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if isinstance(arch, str):
            check_choice('arch', arch, sorted(self.arch_settings))
            arch = self.arch_settings[arch]
        else:
            self._check_arch(arch)
        stem_width, stem_stride = arch['stem']
        stages = [tuple(s) for s in arch['stages']]
        num_stages = len(stages)
        self.out_indices = self._check_stage_args(
            num_stages, out_indices, frozen_stages, in_channels, norm_eval)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        stage_groups = [s[0] for s in stages]
        kernels = self._check_kernel_choices(kernel_choices, stage_groups)
        max_widths = dict(stem=stem_width)
        max_widths.update((g, w) for g, w, _, _ in stages)
        max_widths.update((f'{g}.kernel', max(c)) for g, c in kernels.items())
        self.space = SubnetSpace(
            max_widths, self.default_subnets if subnets is None else subnets,
            choices={f'{g}.kernel': c for g, c in kernels.items()})
        self._active = self.space.largest
        num_stats = self.space.num_stats
        # before the gate's SE: earlier stages and the gated stage's kernel
        self.gate_stage, self.window, gate_kwargs = self._check_gate(
            gate, stage_groups,
            [['stem'] + stage_groups[:i] +
             [f'{g}.kernel' for g in stage_groups[:i + 1] if g in kernels]
             for i in range(len(stage_groups))])

        self.stem = DSConvBNAct(in_channels, stem_width, 3, stem_stride,
                                'stem', num_stats)
        self.in_channels = in_channels
        self.layers = nn.ModuleList()
        width, in_group = stem_width, 'stem'
        for i, (group, out_width, num_blocks, stride) in enumerate(stages):
            blocks = nn.ModuleList()
            for j in range(num_blocks):
                gated = i == self.gate_stage and j == 0
                blocks.append(
                    DSDepthwiseSeparable(
                        width, out_width, stride if j == 0 else 1, in_group,
                        group, num_stats, se_ratio,
                        gate_kwargs if gated else None,
                        max(kernels.get(group, (3, ))),
                        f'{group}.kernel' if group in kernels else None))
                width, in_group = out_width, group
            self.layers.append(blocks)
        self._freeze_stages()

    @staticmethod
    def _check_arch(arch) -> None:
        """A dict arch: ``stem`` (width, stride) and ``stages``, each
        (group, widest width, blocks, stride)."""
        check_keys('arch', arch, ('stem', 'stages'))
        check_ints('arch.stem', arch['stem'], 1, length=2)
        check_type('arch.stages', arch['stages'], (list, tuple),
                   'a list of (group, width, blocks, stride)')
        if not arch['stages']:
            raise ValueError('arch.stages must hold at least one stage')
        for k, stage in enumerate(arch['stages']):
            field = f'arch.stages[{k}]'
            check_type(field, stage, (list, tuple),
                       'a tuple (group, width, blocks, stride)')
            if len(stage) != 4:
                raise ValueError(f'{field} must be (group, width, blocks, '
                                 f'stride), got {stage!r}')
            check_type(f'{field}[0] (group)', stage[0], str, 'a name')
            for i, name in enumerate(('width', 'blocks', 'stride'), 1):
                check_int(f'{field}[{i}] ({name})', stage[i], 1)

    @staticmethod
    def _check_kernel_choices(kernel_choices: Optional[dict],
                              stages: List[str]) -> dict:
        """``{stage: sorted kernel choices}``, checked."""
        if kernel_choices is None:
            return {}
        check_type('kernel_choices', kernel_choices, dict,
                   'a dict {stage: kernel sizes}')
        unknown = sorted(set(kernel_choices) - set(stages))
        if unknown:
            raise ValueError(f'kernel_choices names unknown stage(s) '
                             f'{unknown}; allowed: {stages}')
        checked = {}
        for stage, values in kernel_choices.items():
            values = tuple(values) if isinstance(values, (list, tuple)) \
                else (values, )
            if not values or any(not isinstance(k, int) or k < 1 or k % 2 == 0
                                 for k in values):
                raise ValueError(
                    f'kernel_choices.{stage}={kernel_choices[stage]!r} must '
                    'hold odd kernel sizes >= 1 (a centre slice of the '
                    'largest), e.g. (3, 5)')
            checked[stage] = tuple(sorted(set(values)))
        return checked

    # --- what the mixin's forward passes walk ---------------------------
    def _forward_stem(self, x: torch.Tensor,
                      spec: RunSpec) -> torch.Tensor:
        return self.stem(x, spec)

    def _stages(self) -> List[nn.ModuleList]:
        return list(self.layers)

    def _static_stem(self, spec: SubnetSpec,
                     layers: LayerBuilder) -> Tuple[nn.Module, int]:
        stem, width = self.stem.build_static(spec, self.in_channels, layers)
        return nn.Sequential(*stem), width

    def _describe_stem(self, axes) -> str:
        return self.stem.describe_channels(axes, 'stem', None)

    # --- mmpretrain conventions ----------------------------------------
    def _freeze_stages(self) -> None:
        modules: List[nn.Module] = []
        if self.frozen_stages >= 0:
            modules.append(self.stem)
        modules.extend(self.layers[:max(self.frozen_stages, 0)])
        for m in modules:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""What every DS backbone shares: the active sub-network, the gate check,
the input check, static networks in cached inference, the widest output
widths a detector's neck is built for, weights-only ``Pretrained`` init and
mmpretrain's ``train(mode)`` conventions."""
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from dsnet_mm.ops import DSBatchNorm2d, InferenceCacheBlock, InferenceCacheUser
from dsnet_mm.ops.utils import (check_bool, check_choice, check_int,
                                check_ints, check_keys)
from dsnet_mm.static import LayerBuilder, StaticNet, pool_head
from dsnet_mm.static.cached import cached_static
from ..gates.ds_gate import GATE_FEATURES, GATE_HEAD_INITS
from ..routing import RunSpec
from ..subnet import SubnetKey, SubnetSpace, SubnetSpec
from .pretrained import load_pretrained


class DSBackboneMixin(InferenceCacheUser):
    """Mixin of every DS backbone (put it before ``BaseBackbone`` in the
    bases): what a classifier, a detector and the tools take from one.

    The backbone holds the active sub-network, which persists across
    forwards and is passed explicitly to every layer; it starts as the
    largest. A subclass sets ``self.space`` (a
    :class:`~dsnet_mm.models.subnet.SubnetSpace`), ``self._active``,
    ``self.in_channels``, ``self.norm_eval``, ``self.out_indices`` and
    ``self.window`` (the gate's routing window, empty without a gate), and
    implements ``_freeze_stages``, ``forward_spec(x, spec)``, the gate's
    two halves ``forward_pre_gate(x)`` / ``forward_post_gate(x, spec)``,
    ``build_static(spec, layers, fc, neck)`` (its static form) and
    ``out_widths``. A backbone of stages of blocks gets all of these from
    :class:`StagedBackboneMixin`; DS-ViT writes its own.

    ``mask_positions`` lists where the backbone's layers can apply the
    masks of per-sample routing (see
    :class:`~dsnet_mm.models.routing.MaskedRouting`): a CNN whose layers
    are conv, BN and activation both after and before the activation.
    """

    space: SubnetSpace
    in_channels: int
    norm_eval: bool
    mask_positions: Tuple[str, ...] = ('after_act', 'before_act')

    # --- the active sub-network -----------------------------------------
    @property
    def active_subnet(self) -> SubnetSpec:
        return self._active

    def set_subnet(self, key: SubnetKey) -> SubnetSpec:
        """Make a sub-network (index, name or spec) the active one."""
        self._active = self.space.get(key)
        return self._active

    @contextmanager
    def subnet(self, key: SubnetKey) -> Iterator[SubnetSpec]:
        """Run the block with a sub-network active, then restore the old."""
        previous = self._active
        try:
            yield self.set_subnet(key)
        finally:
            self._active = previous

    @property
    def gated(self) -> bool:
        """Whether the backbone holds a gate (a routing window)."""
        return bool(self.window)

    # --- forward ---------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self.forward_spec(x, self._active)

    # --- static networks in cached inference ----------------------------
    def attach_inference_cache(
            self, block: Optional[InferenceCacheBlock]) -> None:
        """Takes the block of :func:`~dsnet_mm.ops.inference_cache` where
        its model is the classifier or detector holding this backbone and
        the static network gives this backbone's outputs: within it,
        :meth:`cached_static` gives the static networks that run in place of
        the DS layers."""
        if block is not None and not (
                getattr(block.model, 'backbone', None) is self
                and self._static_supported()):
            block = None
        self.inference_block = block

    def _static_supported(self) -> bool:
        """Whether the static network's stem and body give this backbone's
        outputs in cached inference (else its DS layers run there)."""
        return False

    def cached_static(self, x: torch.Tensor, spec: SubnetSpec):
        """The :class:`~dsnet_mm.static.cached.CachedStatic` that runs
        sub-network ``spec`` on inputs like ``x`` in a checked span of the
        classifier's inference cache (see
        :meth:`~dsnet_mm.ops.InferenceCacheBlock.static`), else None (the DS
        layers run; always for a routing)."""
        block = self.inference_block
        if block is None or not isinstance(spec, SubnetSpec):
            return None
        return cached_static(block, spec, x)

    # --- weights-only Pretrained init ------------------------------------
    def init_weights(self) -> None:
        """mmengine's ``init_weights``, except that an
        ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...,
        unmatched_keys=[...])`` is loaded here with
        ``torch.load(weights_only=True)``: a local file, or a URL /
        ``torchvision://`` / ``open-mmlab://`` name fetched by mmengine's
        ``CheckpointLoader`` (see
        :func:`~dsnet_mm.models.backbones.pretrained.read_checkpoint`).

        mmengine 0.10.7's ``PretrainedInit`` calls ``torch.load`` without
        ``weights_only``, which torch >= 2.6 turns into a weights-only load
        that the ``--trust-checkpoint`` switch of the tools would turn off
        for every file. Here the backbone's checkpoint always loads
        weights-only, with the allow-list of
        :mod:`dsnet_mm.engine.checkpoint` (registered when ``dsnet_mm`` is
        imported). A backbone that loads whole
        (:func:`~dsnet_mm.models.backbones.pretrained.register_whole_loading`)
        refuses a checkpoint with missing, unexpected or mis-shaped keys,
        except under its own allowed prefixes and ``unmatched_keys``;
        otherwise missing and unexpected keys are logged, as with mmengine's
        ``Pretrained``. A shape mismatch, or a ``prefix`` that matches no
        key, is always an error.
        """
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) \
            else [self.init_cfg] if self.init_cfg else []
        pretrained = [c for c in cfgs if isinstance(c, dict)
                      and c.get('type') == 'Pretrained']
        if not pretrained:
            return super().init_weights()
        init_cfg = self.init_cfg
        # the others first (as mmengine does), then the checkpoint over them
        self.init_cfg = [c for c in cfgs if c not in pretrained] or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = init_cfg
        for cfg in pretrained:
            self._load_pretrained(cfg)

    def _load_pretrained(self, cfg: dict) -> None:
        load_pretrained(self, cfg)

    # --- checks ---------------------------------------------------------
    def _check_gate(self, gate: Optional[dict], positions: Sequence,
                    groups_before: Sequence[Sequence[str]],
                    key: str = 'stage', extra: Sequence[str] = ()
                    ) -> Tuple[Optional[int], List[SubnetSpec], Optional[dict]]:
        """(index of the gate's position, routing window, ``DSGate`` keyword
        arguments) from the gate config.

        Args:
            gate (dict, optional): ``dict(<key>=..., window=(start, size))``
                and optionally ``features`` (``'squeeze'`` or ``'pooled'``)
                and ``head_init`` (``'torch'`` or ``'tf'``), see
                :class:`~dsnet_mm.models.gates.DSGate`, and the ``extra``
                keys.
            positions (Sequence): Where a gate may sit (the values its
                ``key`` may take), e.g. stage names.
            groups_before (Sequence[Sequence[str]]): For each position, the
                width groups of every layer that runs before the gate: the
                window's sub-networks must agree on all of them.
            key (str): The key naming the position. Defaults to ``'stage'``.
            extra (Sequence[str]): Further optional keys, passed on to
                ``DSGate`` as they are. Defaults to ().
        """
        if gate is None:
            return None, [], None
        check_keys('gate', gate, (key, 'window'),
                   ('features', 'head_init', *extra))
        features = gate.get('features', 'squeeze')
        check_choice('gate.features', features, GATE_FEATURES)
        head_init = gate.get('head_init', 'torch')
        check_choice('gate.head_init', head_init, GATE_HEAD_INITS)
        positions = list(positions)
        if gate[key] not in positions:
            raise ValueError(f'gate.{key}={gate[key]!r} is not a {key}; '
                             f'allowed: {positions}')
        position = positions.index(gate[key])
        # (start, size): the window must lie in the sub-network list
        check_ints('gate.window', gate['window'], length=2)
        start, size = gate['window']
        n = len(self.space)
        check_int('gate.window[0] (start)', start, 0, n - 1)
        check_int('gate.window[1] (size)', size, 1, n - start)
        specs = self.space.subnets[start:start + size]
        for group in groups_before[position]:
            widths = sorted({s[group] for s in specs})
            if len(widths) > 1:
                raise ValueError(
                    f'gate.window=({start}, {size}) mixes widths {widths} of '
                    f'group {group!r}, which runs before the gate '
                    f'({key}={gate[key]!r}): the window\'s sub-networks must '
                    'share every group before the gate')
        kwargs = dict(num_choices=size, features=features,
                      head_init=head_init)
        kwargs.update((k, gate[k]) for k in extra if k in gate)
        return position, specs, kwargs

    def gate_input_width(self, h: torch.Tensor) -> int:
        """The channel width the gate reads, from the features
        ``forward_pre_gate`` returns (its slimming head's MAdds follow it)."""
        return h.shape[1]

    @staticmethod
    def _check_stage_args(num_stages: int,
                          out_indices: Union[int, Sequence[int]],
                          frozen_stages: int, in_channels: int,
                          norm_eval: bool) -> Tuple[int, ...]:
        """Check the arguments every DS backbone shares; returns
        ``out_indices`` (an int or a sequence) as non-negative indices."""
        if isinstance(out_indices, int) and not isinstance(out_indices, bool):
            out_indices = (out_indices, )
        check_ints('out_indices', out_indices, -num_stages, num_stages - 1)
        if not out_indices:
            raise ValueError('out_indices must name at least one stage, got '
                             f'{out_indices!r}')
        check_int('frozen_stages', frozen_stages, -1, num_stages)
        check_int('in_channels', in_channels, 1)
        check_bool('norm_eval', norm_eval)
        return tuple(i % num_stages for i in out_indices)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f'{type(self).__name__} expects images of shape (N, '
                f'{self.in_channels}, H, W) (in_channels={self.in_channels}),'
                f' got {tuple(x.shape)}')

    # --- mmpretrain conventions ----------------------------------------
    def train(self, mode: bool = True):
        """Train mode, keeping frozen stages (and with ``norm_eval`` every
        BN) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, DSBatchNorm2d):
                    m.eval()
        return self


class StagedBackboneMixin(DSBackboneMixin):
    """Mixin of a DS backbone made of stages of blocks (DS-MobileNetV1,
    DS-ResNet): the forward walks, the static form and the channel axes as
    one loop over the stages, each block doing its own part.

    A subclass also sets ``self.gate_stage`` (the index of the stage whose
    first block holds the gate, None without one) and implements
    ``_forward_stem(x, spec)``, ``_static_stem(spec, layers)``,
    ``_describe_stem(axes)`` and ``_stages()`` (the block lists, in order).
    Every block implements ``forward(x, spec)``, ``build_static(spec,
    width, layers)`` and ``describe_channels(axes, prefix, in_group)``; the
    gated stage's first block also ``forward_gate(x, spec)`` (up to and
    through the gate: the features after its attention and the slimming
    logits) and ``forward_after_gate(x, spec)`` (the rest of the block).
    """

    def _static_supported(self) -> bool:
        """The static network's stem and body give the last stage's output:
        this backbone's where it outputs that stage alone."""
        return self.out_indices == (len(self._stages()) - 1, )

    # --- forward ---------------------------------------------------------
    def forward_spec(self, x: torch.Tensor,
                     spec: RunSpec) -> Tuple[torch.Tensor, ...]:
        """Run every layer at ``spec``: a sub-network, or a
        :class:`~dsnet_mm.models.routing.MaskedRouting` (every width at the
        routing's widest, channels masked per sample). Within the
        classifier's inference cache a sub-network runs as its static
        network (:meth:`cached_static`)."""
        self._check_input(x)
        static = self.cached_static(x, spec)
        if static is not None:
            return (static.features(x), )
        x = self._forward_stem(x, spec)
        outs = []
        for i, blocks in enumerate(self._stages()):
            for block in blocks:
                x = block(x, spec)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def forward_pre_gate(
        self, x: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """Run up to the gate, which every sub-network of the window shares.

        Returns:
            tuple: the features after the gate's attention, the slimming
            logits ``[B, len(window)]`` and the outputs of earlier stages in
            ``out_indices``.
        """
        if self.gate_stage is None:
            raise RuntimeError('this backbone has no gate: set gate=dict('
                               "stage=..., window=(start, size))")
        self._check_input(x)
        spec = self.window[0]
        x = self._forward_stem(x, spec)
        stages = self._stages()
        outs = []
        for i, blocks in enumerate(stages[:self.gate_stage]):
            for block in blocks:
                x = block(x, spec)
            if i in self.out_indices:
                outs.append(x)
        x, logits = stages[self.gate_stage][0].forward_gate(x, spec)
        return x, logits, outs

    def forward_post_gate(self, x: torch.Tensor,
                          spec: RunSpec) -> List[torch.Tensor]:
        """Run from the gate on at ``spec`` (a sub-network or a routing)."""
        stages = self._stages()
        outs = []
        for i in range(self.gate_stage, len(stages)):
            for j, block in enumerate(stages[i]):
                x = block.forward_after_gate(x, spec) \
                    if i == self.gate_stage and j == 0 else block(x, spec)
            if i in self.out_indices:
                outs.append(x)
        return outs

    # --- the static form ---------------------------------------------
    def build_static(self,
                     spec: SubnetSpec,
                     layers: LayerBuilder,
                     fc: Optional[nn.Module] = None,
                     neck: Optional[nn.Module] = None) -> StaticNet:
        """Sub-network ``spec`` as a :class:`~dsnet_mm.static.StaticNet`
        whose layers ``layers`` builds: the stem (``_static_stem``), each
        block's own static form (its ``build_static(spec, width, layers)``)
        stage by stage, and global pooling with the classifier ``fc`` (the
        classifier's global-average-pooling neck; an identity where ``fc``
        is None, as for a detector's backbone).

        Args:
            spec (SubnetSpec): The sub-network (its widths and BN row).
            layers (LayerBuilder): The layer builder.
            fc (nn.Module, optional): The classifier's linear layer.
            neck (nn.Module, optional): The classifier's neck (a CNN's
                static head pools globally, as ``GlobalAveragePooling``).
        """
        stem, width = self._static_stem(spec, layers)
        body: List[nn.Module] = []
        stage_ends = []
        for blocks in self._stages():
            for block in blocks:
                modules, width = block.build_static(spec, width, layers)
                body += modules
            stage_ends.append(len(body))
        return StaticNet(stem, body, pool_head(fc, width, layers),
                         stage_ends)

    # --- the channel axes (the progressive search's reordering) -------
    def describe_channels(self, axes) -> str:
        """Fill a :class:`~dsnet_mm.search.channels.ChannelAxes` with every
        tensor axis of each width group: the stem's (``_describe_stem``),
        then each block's own (its ``describe_channels(axes, prefix,
        in_group)``, returning its output's group) stage by stage; returns
        the output's group."""
        group = self._describe_stem(axes)
        names = {id(m): n for n, m in self.named_modules()}
        for blocks in self._stages():
            for block in blocks:
                group = block.describe_channels(axes, names[id(block)], group)
        return group

    # --- what a detector's neck reads ---------------------------------
    @property
    def out_widths(self) -> Tuple[int, ...]:
        """The widest channel count of each output (every sub-network's
        output is at most this wide): what a neck built for the largest
        architecture reads (see :func:`~dsnet_mm.models.detectors.pad_to`).
        """
        stages = self._stages()
        return tuple(self.space.max_widths[stages[i][-1].group]
                     for i in self.out_indices)

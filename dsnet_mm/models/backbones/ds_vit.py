# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-ViT: a dynamic slimmable vision transformer with dynamic idle slicing.

DS-Net++'s DS-ViT++ as we read it (``docs/reference/dsnet_pp.md``): the
paper's method sections were not available to us, so the slicing rules and
the reading of "dynamic idle slicing" below are our proposals, with the
listed alternatives selectable.
"""
import copy
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS
from torch.utils.checkpoint import checkpoint

from dsnet_mm.ops import DSLayerNorm, rejoin_idle
from dsnet_mm.ops.se import TOKEN_POOLS
from dsnet_mm.ops.utils import (check_bool, check_choice, check_float,
                                check_int, check_ints, check_type)
from dsnet_mm.ops.vit import channel_mask
from dsnet_mm.static import (LayerBuilder, StaticClsTokenHead, StaticNet,
                             StaticViTEmbed, build_se)
from ..gates import DSGate
from ..routing import RunSpec
from ..subnet import (SubnetSpace, SubnetSpec, SubnetsCfg,
                      check_subnets_cfg)
from .ds_backbone import DSBackboneMixin
from .ds_vit_config import (ARCH_KEYS, ARCH_ZOO, DEFAULT_SUBNETS,
                            INTERPOLATE_MODES, LAYER_KEYS, OUT_TYPES,
                            check_fixed, check_layer_cfgs, check_norm_cfg,
                            convert_checkpoint, default_ladder,
                            expand_subnets)
from .ds_vit_conventions import ViTConventionsMixin
from .ds_vit_layers import (DIMS, DSTransformerEncoderLayer, block_groups,
                            route_mask)
from .pretrained import register_whole_loading



@MODELS.register_module()
class DSViT(ViTConventionsMixin, DSBackboneMixin, BaseBackbone):
    """Dynamic slimmable vision transformer (DS-ViT++ of DS-Net++).

    mmpretrain's ``VisionTransformer`` (class token, learned position
    embedding, pre-norm blocks, final LayerNorm ``ln1``) whose blocks run
    sub-networks by slicing their stored weights: per block, the embedding
    width ``d`` (channels of the residual stream the block reads and
    writes), the number of heads ``h`` at the fixed head dimension
    ``embed_dims / num_heads`` and the MLP hidden width ``m``. Every
    argument of ``VisionTransformer`` is accepted with its meaning and
    default, and the parameter names are its own, so a config swaps the
    backbone's ``type`` and a ``VisionTransformer`` checkpoint loads as it
    is (see **Loading**). At full width the network computes what
    ``VisionTransformer`` computes.

    Block ``i`` (module ``layers.i``) has three width groups,
    ``'blocks.{i}.embed'``, ``'blocks.{i}.heads'`` and ``'blocks.{i}.mlp'``;
    the residual stream keeps all channels and a block reads and writes the
    first ``d`` (dynamic idle slicing: :class:`DSTransformerEncoderLayer`;
    ``idle_head`` and ``idle_branches`` select the other readings). The
    ``gate`` after block ``k`` reads the class token or the mean patch token
    and picks one sub-network of its window per image for the blocks after
    it. Every state-dict load is whole or fails (the position embedding
    resized to ``img_size`` first, as ``VisionTransformer`` resizes it),
    except keys under ``unmatched_keys``. The readings, the ladders and the
    gate on tokens: ``docs/ds_vit.md``; loading: ``docs/dropin.md``.

    DS-ViT has no channel axes for the progressive search's reordering (no
    ``describe_channels``, which the search asks for): every block's
    embedding group indexes one shared stream axis, and heads move in
    blocks of ``head_dims`` rows of q, k and v, neither of which is a group
    of freely permutable channel axes. In cached inference it keeps its
    sliced blocks rather than running its static network in their place
    (the mixin's default): that network takes the stored image size only
    (this backbone resizes the position embedding), and normalises the
    class token in its head.

    Args:
        arch (str | dict): One of mmpretrain's ``VisionTransformer`` archs
            (``'s'``/``'small'``, ``'b'``/``'base'``, ``'l'``/``'large'``,
            ``'h'``/``'huge'``, ``'eva-g'``/``'eva-giant'``, ``'deit-t'``/
            ``'deit-tiny'``, ``'deit-s'``/``'deit-small'``, ``'deit-b'``/
            ``'deit-base'``, ``'dinov2-s'``/``'dinov2-small'``,
            ``'dinov2-g'``/``'dinov2-giant'``; any case), ``'digits'`` (for
            32x32 images with ``patch_size=4``), or a dict with keys
            ``embed_dims``, ``num_layers``, ``num_heads`` and
            ``feedforward_channels``. Defaults to ``'base'``.
        img_size (int | tuple): Input size the position embedding is stored
            for (other sizes interpolate it). Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Image channels. Defaults to 3.
        out_indices (int | Sequence[int]): Blocks whose outputs are returned
            (negative counts from the last), any sequence (list, tuple,
            range). Defaults to -1.
        drop_rate (float): Dropout after the position embedding, after each
            attention's output projection and in each MLP (after the
            activation and after the output). Defaults to 0.
        drop_path_rate (float): Stochastic depth, rising linearly to this
            over the blocks. Defaults to 0.
        qkv_bias (bool): Whether q, k and v have a bias. Defaults to True.
        norm_cfg (dict): ``dict(type='LN', eps=...)``. Defaults to
            ``dict(type='LN', eps=1e-6)``.
        final_norm (bool): Normalise the last block's output (``ln1``).
            Defaults to True.
        out_type (str): ``'cls_token'`` (``[B, C]``), ``'featmap'`` (patch
            tokens, ``[B, C, H, W]``), ``'avg_featmap'`` (mean patch token,
            normalised by ``ln2``, ``[B, C]``) or ``'raw'`` (``[B, N, C]``).
            Defaults to ``'cls_token'``.
        with_cls_token (bool): Prepend the class token. False needs an
            ``out_type`` other than ``'cls_token'`` and a gate on
            ``tokens='mean'``. Defaults to True.
        frozen_stages (int): As ``VisionTransformer``'s: k > 0 freezes (no
            gradient, eval mode in training) the patch embedding, class
            token, position embedding, pre-norm and blocks 1..k (at k =
            ``num_layers`` also the final norms); 0 and -1 freeze nothing.
            Defaults to -1.
        interpolate_mode (str): Position embedding interpolation for other
            input sizes and for checkpoints of another size. Defaults to
            ``'bicubic'``.
        layer_scale_init_value (float): Initial per-channel scale of every
            branch (sliced with the embedding width); 0 for none. Defaults
            to 0.
        patch_cfg (dict): Overrides of the patch embedding's arguments
            (mmcv's ``PatchEmbed``; it is never sliced). Defaults to ``{}``.
        layer_cfgs (dict | Sequence[dict]): Overrides of each block's
            arguments, one dict for all or one per block: ``drop_rate``,
            ``attn_drop_rate``, ``drop_path_rate``, ``qkv_bias``,
            ``layer_scale_init_value``, ``act_cfg`` (an element-wise
            activation), ``norm_cfg`` (LN) and, at their only supported
            values, ``num_fcs=2``, ``ffn_type='origin'``,
            ``init_cfg=None``. Defaults to ``{}``.
        pre_norm (bool): A LayerNorm over all channels after the position
            embedding (and no patch embedding bias), as CLIP's. Defaults to
            False.
        init_cfg (dict | list, optional): mmengine initialisation configs,
            applied after DSViT's own initialisation (DeiT's: truncated
            normal, std 0.02, for every linear weight, zero biases, and the
            position embedding); a ``layer`` naming ``'Linear'``,
            ``'Conv2d'`` or ``'LayerNorm'`` reaches the DS layers of that
            kind too. ``type='Pretrained'`` (``checkpoint``, ``prefix``,
            ``map_location`` and ``unmatched_keys``, further prefixes that
            may stay unmatched in this load) loads weights-only and whole
            (see **Loading**). Defaults to None.
        subnets (dict | list, optional): The sub-network list, see above.
            Defaults to the arch's ladder (DeiT-S: ``embed`` 192-384,
            ``heads`` 3-6, ``mlp`` 384-1536 in 4 steps; other named archs:
            about half the embedding width and heads and a quarter of the
            MLP width to the full ones in 4 whole steps), or for a dict
            arch the
            full-width network only.
        fixed_blocks (int): Leading blocks that never slice. Defaults to 0.
        idle_head (bool): Reading (B), see above. Defaults to False.
        idle_branches (bool): Reading (C), see above. Defaults to False.
        gate (dict, optional): ``dict(block=k, window=(start, size))`` and
            optionally ``features`` (``'squeeze'`` or ``'pooled'``),
            ``head_init`` (``'torch'`` or ``'tf'``), see ``DSGate``, and
            ``tokens`` (``'cls_token'`` or ``'mean'``). Defaults to None
            (no gate, e.g. Stage I).
        with_cp (bool): Recompute each block in the backward pass instead of
            storing its activations (activation checkpointing). Defaults to
            False.
        unmatched_keys (Sequence[str]): Key prefixes (relative to the
            backbone) that a loaded checkpoint may lack or hold beyond the
            model's, see **Loading**. Defaults to ().
    """
    arch_zoo = ARCH_ZOO
    default_subnets = DEFAULT_SUBNETS
    OUT_TYPES = OUT_TYPES
    LAYER_KEYS = LAYER_KEYS
    num_extra_tokens = 1  # the class token (0 with with_cls_token=False)
    # per-sample routing masks each op's input and output and the MLP's
    # hidden units after its activation (dsnet_mm.ops.vit); there is no
    # conv-BN-activation to mask before the activation
    mask_positions = ('after_act', )

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 final_norm: bool = True,
                 out_type: str = 'cls_token',
                 with_cls_token: bool = True,
                 frozen_stages: int = -1,
                 interpolate_mode: str = 'bicubic',
                 layer_scale_init_value: float = 0.,
                 patch_cfg: dict = dict(),
                 layer_cfgs: Union[dict, Sequence[dict]] = dict(),
                 pre_norm: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 subnets: Optional[SubnetsCfg] = None,
                 fixed_blocks: int = 0,
                 idle_head: bool = False,
                 idle_branches: bool = False,
                 gate: Optional[dict] = None,
                 with_cp: bool = False,
                 unmatched_keys: Sequence[str] = ()) -> None:
        super().__init__(init_cfg)
        if isinstance(arch, str):
            names = sorted(self.arch_zoo)
            check_choice('arch', arch.lower(), names)
            arch = arch.lower()
            if subnets is None:
                subnets = self.default_subnets.get(arch) or \
                    default_ladder(self.arch_zoo[arch])
            arch = self.arch_zoo[arch]
        elif not isinstance(arch, Mapping) or set(arch) != set(ARCH_KEYS):
            raise ValueError(f'arch must be one of {sorted(self.arch_zoo)} '
                             f'or a dict with keys {list(ARCH_KEYS)}, got '
                             f'{arch!r}')
        for key in ARCH_KEYS:
            check_int(f'arch.{key}', arch[key], 1)
        self.arch_settings = dict(arch)
        self.embed_dims = arch['embed_dims']
        self.num_layers = arch['num_layers']
        tops = dict(embed=arch['embed_dims'], heads=arch['num_heads'],
                    mlp=arch['feedforward_channels'])
        if subnets is None:
            subnets = [tops]
        check_subnets_cfg('subnets', subnets)
        check_choice('out_type', out_type, self.OUT_TYPES)
        norm_eps = check_norm_cfg('norm_cfg', norm_cfg)
        if isinstance(out_indices, range):
            out_indices = list(out_indices)
        self.out_indices = self._check_stage_args(
            self.num_layers, out_indices, -1, in_channels, False)
        check_int('frozen_stages', frozen_stages, -1, self.num_layers)
        check_int('fixed_blocks', fixed_blocks, 0, self.num_layers)
        size = (img_size, img_size) if isinstance(img_size, int) \
            else img_size
        check_ints('img_size', size, 1, length=2)
        check_int(f'patch_size (img_size={img_size})', patch_size, 1,
                  min(size))
        for key, value in (('final_norm', final_norm),
                           ('idle_head', idle_head),
                           ('idle_branches', idle_branches),
                           ('qkv_bias', qkv_bias),
                           ('with_cls_token', with_cls_token),
                           ('pre_norm', pre_norm), ('with_cp', with_cp)):
            check_bool(key, value)
        check_float('drop_rate', drop_rate, 0, 1, high_open=True)
        check_float('drop_path_rate', drop_path_rate, 0, 1, high_open=True)
        check_float('layer_scale_init_value', layer_scale_init_value, 0)
        check_choice('interpolate_mode', interpolate_mode,
                     INTERPOLATE_MODES)
        check_type('patch_cfg', patch_cfg, Mapping, 'a dict')
        if not with_cls_token and out_type == 'cls_token':
            raise ValueError(
                "with_cls_token=False has no class token to output: set "
                "out_type to 'featmap', 'avg_featmap' or 'raw'")
        self.out_type = out_type
        self.final_norm = final_norm
        self.idle_head = idle_head
        self.idle_branches = idle_branches
        self.fixed_blocks = fixed_blocks
        self.frozen_stages = frozen_stages
        self.interpolate_mode = interpolate_mode
        self.in_channels = in_channels
        self.with_cls_token = with_cls_token
        self.with_pre_norm = pre_norm
        self.with_cp = with_cp
        self.img_size = size
        self.norm_eval = False  # no batch norm
        if not with_cls_token:
            self.num_extra_tokens = 0

        groups = [block_groups(i) for i in range(self.num_layers)]
        max_widths = {g: tops[dim] for gs in groups
                      for dim, g in zip(DIMS, gs)}
        skippable = [g for gs in groups for g in gs[1:]] \
            if idle_branches else []
        self.space = SubnetSpace(
            max_widths, expand_subnets(subnets, groups, tops, self.fixed_blocks),
            skippable=skippable)
        check_fixed(self.space, groups, tops, self.fixed_blocks)
        self._active = self.space.largest
        # the gate sits after block k < num_layers - 1 (``gate_block``: k)
        self.gate_block, self.window, gate_kwargs = self._check_gate(
            gate, range(self.num_layers - 1),
            [[g for gs in groups[:k + 1] for g in gs]
             for k in range(self.num_layers - 1)],
            key='block', extra=('tokens', ))

        self.patch_embed = PatchEmbed(**dict(
            dict(in_channels=in_channels, input_size=img_size,
                 embed_dims=self.embed_dims, conv_type='Conv2d',
                 kernel_size=patch_size, stride=patch_size,
                 bias=not pre_norm), **patch_cfg))
        self.patch_resolution = self.patch_embed.init_out_size
        num_patches = self.patch_resolution[0] * self.patch_resolution[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims)) \
            if with_cls_token else None
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + self.num_extra_tokens,
                        self.embed_dims))
        self.drop_after_pos = nn.Dropout(p=drop_rate)
        # np.linspace's values (as VisionTransformer's), without a tensor
        step = drop_path_rate / max(1, self.num_layers - 1)
        rates = [i * step for i in range(self.num_layers)]
        layer_kwargs = check_layer_cfgs(
            layer_cfgs, self.num_layers,
            dict(drop_rate=drop_rate, qkv_bias=qkv_bias,
                 layer_scale_init_value=layer_scale_init_value,
                 norm_cfg=norm_cfg), rates)
        self.layers = nn.ModuleList(
            DSTransformerEncoderLayer(
                self.embed_dims, arch['num_heads'],
                arch['feedforward_channels'], groups[i], **layer_kwargs[i])
            for i in range(self.num_layers))
        self.pre_norm = DSLayerNorm(self.embed_dims, norm_eps) \
            if pre_norm else nn.Identity()
        if final_norm:
            self.ln1 = DSLayerNorm(self.embed_dims, norm_eps)
        if out_type == 'avg_featmap':
            self.ln2 = DSLayerNorm(self.embed_dims, norm_eps)
        if gate_kwargs is not None:
            tokens = gate_kwargs.pop('tokens', 'cls_token')
            check_choice('gate.tokens', tokens, TOKEN_POOLS)
            if tokens == 'cls_token' and not with_cls_token:
                raise ValueError(
                    "gate.tokens='cls_token' reads the class token, but "
                    "with_cls_token=False: set gate.tokens='mean'")
            self.gate = DSGate(self.embed_dims, tokens=tokens, **gate_kwargs)
        self._hw = self.patch_resolution  # the grid of the last input
        register_whole_loading(self, convert_checkpoint, unmatched_keys)
        self._freeze_stages()

    # --- forward ---------------------------------------------------------
    def forward_spec(self, x: torch.Tensor,
                     spec: RunSpec) -> Tuple[torch.Tensor, ...]:
        """Run every block at ``spec``: a sub-network, or a
        :class:`~dsnet_mm.models.routing.MaskedRouting` (every width at the
        routing's widest, channels, heads and hidden units masked per
        sample)."""
        self._check_input(x)
        return tuple(self._run_blocks(self._embed(x), spec,
                                      range(self.num_layers))[1])

    def forward_pre_gate(
        self, x: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        """Run blocks ``0..k`` (shared by the window) and the gate: (tokens
        after the gate's attention, slimming logits ``[B, len(window)]``,
        outputs of those blocks in ``out_indices``)."""
        if self.gate_block is None:
            raise RuntimeError('this backbone has no gate: set gate=dict('
                               'block=..., window=(start, size))')
        self._check_input(x)
        x, outs, logits = self._run_blocks(
            self._embed(x), self.window[0], range(self.gate_block + 1),
            gate_logits=True)
        return x, logits, outs

    def forward_post_gate(self, x: torch.Tensor,
                          spec: RunSpec) -> List[torch.Tensor]:
        """Run blocks ``k+1`` on at ``spec`` (a sub-network or a routing)."""
        return self._run_blocks(
            x, spec, range(self.gate_block + 1, self.num_layers))[1]

    def gate_input_width(self, h: torch.Tensor) -> int:
        return self.window[0][block_groups(self.gate_block)[0]]

    def build_static(self,
                     spec: SubnetSpec,
                     layers: LayerBuilder,
                     fc: Optional[nn.Module] = None,
                     neck: Optional[nn.Module] = None) -> StaticNet:
        """Sub-network ``spec`` as a :class:`~dsnet_mm.static.StaticNet`
        whose layers ``layers`` builds: the embedding for the stored image
        size, every block's own static form with the gate's SE after its
        block, and the class token's norm with the classifier ``fc``.

        Built for ``out_type='cls_token'``, the last block as the output, no
        patch norm and no neck (the classifier reads the class token).
        """
        if self.out_type != 'cls_token' or neck is not None or \
                self.out_indices != (self.num_layers - 1, ) or \
                self.patch_embed.norm is not None or fc is None:
            raise ValueError(
                'a static DS-ViT is built for out_type=cls_token, '
                'out_indices=-1, no neck, no patch_cfg.norm_cfg and a '
                f'classifier, got out_type={self.out_type!r}, out_indices='
                f'{self.out_indices}, neck='
                f'{None if neck is None else type(neck).__name__}, patch '
                f'norm={type(self.patch_embed.norm).__name__}, classifier='
                f'{None if fc is None else type(fc).__name__}')
        blocks: List[nn.Module] = []
        for i, layer in enumerate(self.layers):
            blocks.append(layer.build_static(spec, layers))
            if i == self.gate_block:
                blocks.append(
                    build_se(self.gate, spec[block_groups(i)[0]], layers))
        width = spec[block_groups(self.num_layers - 1)[0]] \
            if self.idle_head else self.embed_dims
        norm = layers.layer_norm(self.ln1, width) if self.final_norm \
            else None
        # the patch embedding is never sliced: a copy for every builder
        embed = StaticViTEmbed(
            copy.deepcopy(self.patch_embed.projection), self.cls_token,
            self.pos_embed,
            layers.layer_norm(self.pre_norm, self.embed_dims)
            if self.with_pre_norm else None)
        return StaticNet(embed, blocks,
                         StaticClsTokenHead(norm, width,
                                            layers.linear(fc, width)))

    @property
    def out_widths(self) -> Tuple[int, ...]:
        """The widest channel count of each output: the stream's
        ``embed_dims`` (with ``idle_head`` a sub-network's output is its
        last block's embedding width, at most that)."""
        return (self.embed_dims, ) * len(self.out_indices)

    def _run_blocks(self, x: torch.Tensor, spec: RunSpec, indices: range,
                    gate_logits: bool = False
                    ) -> Tuple[torch.Tensor, List[torch.Tensor],
                               Optional[torch.Tensor]]:
        """Run blocks ``indices`` and the gate after its block: (tokens,
        outputs in ``out_indices``, slimming logits if ``gate_logits``,
        else None: the gate then runs as a plain SE)."""
        outs, logits = [], None
        for i in indices:
            if self.with_cp and self.training and torch.is_grad_enabled():
                x = checkpoint(self.layers[i], x, spec, use_reentrant=False)
            else:
                x = self.layers[i](x, spec)
            if i == self.gate_block:
                d = spec[block_groups(i)[0]]
                if gate_logits:
                    a, logits = self.gate.forward_gate(x[..., :d])
                else:
                    a = self.gate(x[..., :d])
                x = rejoin_idle(a, x)
            if i in self.out_indices:
                outs.append(self._format_output(x, spec, i))
        return x, outs, logits

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens with the class token and position embedding, the
        dropout and the pre-norm; the patch grid is kept for ``'featmap'``
        outputs (``self._hw``)."""
        tokens, self._hw = self.patch_embed(x)
        if self.cls_token is not None:
            cls_token = self.cls_token.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls_token, tokens], dim=1)
        tokens = tokens + resize_pos_embed(
            self.pos_embed,
            self.patch_resolution,
            self._hw,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)
        return self.pre_norm(self.drop_after_pos(tokens))

    def _format_output(self, x: torch.Tensor, spec: RunSpec,
                       index: int) -> torch.Tensor:
        mask = None
        if self.idle_head:
            group = block_groups(index)[0]
            x, mask = x[..., :spec[group]], route_mask(spec, group)
        if self.final_norm and index == self.num_layers - 1:
            x = self.ln1(x, mask)
        elif mask is not None:
            x = x * channel_mask(mask, x).to(x.dtype)
        if self.out_type == 'raw':
            return x
        if self.out_type == 'cls_token':
            return x[:, 0]
        patches = x[:, self.num_extra_tokens:]
        if self.out_type == 'featmap':
            return patches.reshape(x.shape[0], *self._hw,
                                   -1).permute(0, 3, 1, 2)
        return self.ln2(patches.mean(dim=1), mask)

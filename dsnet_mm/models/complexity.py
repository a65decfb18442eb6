# Copyright (c) dsnet_mm contributors. All rights reserved.
"""MAdds and parameter counts of what a forward pass really runs.

Counting hooks read the shapes of each layer's actual input and output, so a
sliced sub-network is counted at its true widths and a plain torch network by
the very same rules (which is what makes the two comparable). Rules, per image:

- convolution: ``out_h * out_w * c_out * (c_in / groups) * k_h * k_w`` (a
  sliced kernel counted at the size the call ran; a plain, ungrouped conv
  reading a zero-padded map, :func:`~dsnet_mm.ops.zero_pad_channels`, at
  the map's unpadded ``c_in``: a detector's neck reading a narrow
  sub-network's outputs is counted as the conv with sliced input weights
  that the padding stands for);
- linear: ``in_features * out_features`` per token (the sliced q/k/v
  projection: ``d * 3 * h * head_dims``);
- attention: ``2 * h * N_q * N_k * head_dims`` (``q k^T`` and the weighted
  sum of ``v``), counted on :class:`~dsnet_mm.ops.AttentionCore` and, by the
  same rule, on mmpretrain's ``MultiheadAttention`` (whose qkv and proj are
  linear layers counted on their own); the softmax and scaling are free;
- average pooling: one add per input element (a token pool's mean: per
  patch token element; its class token: none);
- biases, batch norms, layer norms and activations: no MAdds.

Parameters are the elements of the weight slices a layer used (a layer run
twice counts once). Parameters held directly by another module (a ViT's
class token and position embedding, a layer scale) count in full when that
module ran or any counted layer inside it did, except a DS layer scale,
which counts the channels it scaled.
"""
from typing import Callable, Dict, Sequence, Tuple

import torch
import torch.nn as nn
from mmpretrain.models.utils.attention import MultiheadAttention
from torch.nn.modules.batchnorm import _BatchNorm

from dsnet_mm.ops import (AttentionCore, DSConv2d, DSLinear, DSQKVLinear,
                          TokenPool, unfolded_bn, used_channels)

_POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)


def _layer_cost(module: nn.Module, args: Sequence, kwargs: Dict,
                out) -> Tuple[int, int]:
    """(MAdds per image, parameters used) of one call of a leaf layer (or
    of an attention module, for its two matmuls)."""
    x = args[0]
    batch = x.shape[0]
    if isinstance(module, AttentionCore):
        q, k = args[0], args[1]
        return 2 * q.numel() // batch * k.shape[-2], 0
    if isinstance(module, MultiheadAttention):
        tokens = x.shape[1]
        return 2 * tokens * tokens * module.num_heads * module.head_dims, 0
    if isinstance(module, DSQKVLinear):
        c_in, c_out = x.shape[-1], sum(o.shape[1] * o.shape[-1] for o in out)
        bias = c_out if module.bias is not None else 0
        return x.numel() // batch * c_out, c_in * c_out + bias
    if isinstance(module, (DSConv2d, nn.Conv2d)):
        c_in, c_out = x.shape[1], out.shape[1]
        if isinstance(module, DSConv2d):
            groups = module.groups_for(c_in)
            kernel = kwargs.get('kernel_size', args[2] if len(args) > 2
                                else None)
            kh = kw = module.check_kernel(kernel)
        else:
            groups = module.groups
            kh, kw = module.kernel_size
            if groups == 1:
                c_in = used_channels(x)
        per_out = (c_in // groups) * kh * kw
        bias = c_out if module.bias is not None else 0
        return out.numel() // batch * per_out, c_out * per_out + bias
    if isinstance(module, (DSLinear, nn.Linear)):
        c_in, c_out = x.shape[-1], out.shape[-1]
        bias = c_out if module.bias is not None else 0
        return out.numel() // batch * c_in, c_in * c_out + bias
    if isinstance(module, _POOLS):
        return x.numel() // batch, 0
    if isinstance(module, TokenPool):
        return (x[:, 1:].numel() // batch if module.mode == 'mean' else 0), 0
    if isinstance(module, (_BatchNorm, nn.LayerNorm, nn.GroupNorm)):
        channels = x.shape[1] if not isinstance(module, nn.LayerNorm) \
            else x.shape[-1]
        return 0, 2 * channels if module.weight is not None else 0
    return 0, 0


_COUNTED = (DSConv2d, nn.Conv2d, DSLinear, nn.Linear, _BatchNorm,
            nn.LayerNorm, nn.GroupNorm, DSQKVLinear, AttentionCore,
            MultiheadAttention, TokenPool) + _POOLS


def count_complexity(model: nn.Module, run: Callable[[], object]) -> Dict:
    """Count the MAdds (per image) and parameters of ``run()`` over ``model``.

    Args:
        model (nn.Module): The module whose layers are watched.
        run (Callable): Runs the forward pass to count, e.g.
            ``lambda: model(torch.zeros(1, 3, 224, 224))``.

    Returns:
        dict: ``{'madds': int, 'params': int}``.
    """
    totals = dict(madds=0, params=0)
    seen = set()

    def hook(module, args, kwargs, out):
        madds, params = _layer_cost(module, args, kwargs, out)
        totals['madds'] += madds
        if id(module) not in seen:
            seen.add(id(module))
            totals['params'] += params

    # modules holding parameters of their own outside the counted layers
    holders = {id(m): m for m in model.modules()
               if not isinstance(m, _COUNTED)
               and any(True for _ in m.parameters(recurse=False))}
    ran: Dict[int, int] = {}  # holder id -> parameters used, once it ran

    def holder_hook(module, args, out):
        x = args[0] if args else None
        if type(module).__name__ == 'DSLayerScale' and \
                isinstance(x, torch.Tensor):
            ran[id(module)] = max(ran.get(id(module), 0), x.shape[-1])
        else:
            ran[id(module)] = sum(
                p.numel() for p in module.parameters(recurse=False))

    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, _COUNTED)
    ] + [m.register_forward_hook(holder_hook) for m in holders.values()]
    try:
        with torch.no_grad(), unfolded_bn(model):
            run()
    finally:
        for h in handles:
            h.remove()
    for key, m in holders.items():
        if key in ran:
            totals['params'] += ran[key]
        elif any(id(c) in seen for c in m.modules()):
            totals['params'] += sum(
                p.numel() for p in m.parameters(recurse=False))
    return totals

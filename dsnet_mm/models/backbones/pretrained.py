# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Loading a static network's checkpoint into a DS backbone: whole or fail.

A DS backbone keeps the layer names of the static backbone it slims (e.g.
mmpretrain's ``VisionTransformer`` or ``ResNet``), so a checkpoint of the
static network loads into it directly, by ``init_cfg=dict(type=
'Pretrained', ...)`` or by mmengine's ``load_from``. Both end in
``nn.Module._load_from_state_dict``, whose pre-hooks see the whole state
dict and the module's key prefix. :func:`register_whole_loading` adds such
a hook to a backbone; on every load it

1. converts the checkpoint's keys under the backbone's prefix in place with
   the backbone's ``convert`` function (names that cannot be shared, a
   position embedding stored for another image size, ...), then
2. checks that the converted keys are exactly the backbone's, with the same
   shapes, except keys under the allowed prefixes (e.g. a gate that the
   static network does not have), and raises a ValueError naming every
   missing, unexpected or mis-shaped key otherwise.

mmengine's ``load_from`` loads with ``strict=False`` and only logs missing
keys, and its ``Pretrained`` init does the same: with the hook, such a load
fails instead of leaving layers at their initialisation. Code that loads a
deliberately partial state dict (and checks it itself) wraps the load in
:func:`partial_loading`.
"""
import os.path as osp
import pickle
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional, Sequence

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model.weight_init import update_init_info

from dsnet_mm.ops.utils import check_keys, check_type

# convert(module, state_dict, prefix): edits the keys under prefix in place
Convert = Callable[[nn.Module, Dict[str, torch.Tensor], str], None]

_ATTR = '_whole_loading'


def check_prefixes(field: str, prefixes: Sequence[str]) -> tuple:
    """``prefixes`` (a sequence of str) as a tuple, or a ValueError naming
    ``field``."""
    if isinstance(prefixes, str) or not isinstance(prefixes, (list, tuple)) \
            or not all(isinstance(p, str) and p for p in prefixes):
        raise ValueError(f'{field} must be a list of non-empty key prefixes '
                         f"(e.g. ['gate.']), got {prefixes!r}")
    return tuple(prefixes)


def unmatched_keys(own: Dict[str, torch.Tensor],
                   state: Dict[str, torch.Tensor],
                   allowed: Sequence[str] = ()) -> Dict[str, list]:
    """The keys that differ between a module's state dict and a checkpoint.

    Args:
        own (dict): The module's state dict (the keys expected).
        state (dict): The checkpoint's, with the same key prefix.
        allowed (Sequence[str]): Key prefixes that may be missing on either
            side.

    Returns:
        dict: ``missing`` (in the module, not in the checkpoint),
        ``unexpected`` (the other way) and ``shape`` (``'key: checkpoint
        (..) vs model (..)'``), each a sorted list.
    """
    allowed = tuple(allowed)

    def keep(key: str) -> bool:
        return not (allowed and key.startswith(allowed))

    return dict(
        missing=sorted(k for k in own if k not in state and keep(k)),
        unexpected=sorted(k for k in state if k not in own and keep(k)),
        shape=sorted(
            f'{k}: checkpoint {tuple(state[k].shape)} vs model '
            f'{tuple(own[k].shape)}' for k in own
            if k in state and tuple(state[k].shape) != tuple(own[k].shape)))


def format_unmatched(what: str, unmatched: Dict[str, list],
                     hint: str = '') -> Optional[str]:
    """The error message for :func:`unmatched_keys`' result, None if every
    key matched."""
    titles = (('missing', 'missing (in the model, not in the checkpoint)'),
              ('unexpected', 'unexpected (in the checkpoint, not in the '
               'model)'),
              ('shape', 'shapes differ'))
    if not any(unmatched[key] for key, _ in titles):
        return None
    lines = [f'{what} does not match the model:']
    lines.extend(f'  {title} ({len(unmatched[key])}): '
                 + ', '.join(unmatched[key])
                 for key, title in titles if unmatched[key])
    if hint:
        lines.append(hint)
    return '\n'.join(lines)


def _hook(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    convert, allowed = getattr(module, _ATTR)
    if convert is not None:
        convert(module, state_dict, prefix)
    if module.__dict__.get('_partial_loading', False):
        return
    state = {k[len(prefix):]: v for k, v in state_dict.items()
             if k.startswith(prefix)}
    if not state:
        return  # nothing for this module (e.g. an EMA copy): the caller's
    extra = module.__dict__.get('_extra_unmatched', ())
    message = format_unmatched(
        f'the checkpoint loaded into {type(module).__name__} '
        f'(keys under {prefix!r})',
        unmatched_keys(module.state_dict(), state, (*allowed, *extra)),
        f'{type(module).__name__} loads a checkpoint whole or fails: list '
        'key prefixes that may stay unmatched in its unmatched_keys '
        "argument (e.g. ['gate.'] for a gate the checkpoint lacks)")
    if message:
        raise ValueError(message)


def load_pretrained(module: nn.Module, cfg: dict) -> None:
    """Load ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...,
    map_location=..., unmatched_keys=...)`` into ``module``, read
    weights-only (:func:`read_checkpoint`: a local file, a URL or
    ``torchvision://...``).

    Only the checkpoint's keys under ``prefix`` (default: all) load, the
    prefix removed; ``unmatched_keys`` adds key prefixes that may stay
    unmatched in this load. mmengine 0.10.7's ``PretrainedInit`` calls
    ``torch.load`` without ``weights_only`` and only logs unmatched keys:
    here the file always loads weights-only, with the allow-list of
    :mod:`dsnet_mm.engine.checkpoint`, and a module with
    :func:`register_whole_loading` loads whole or fails (any other module
    has its missing and unexpected keys logged).

    Raises:
        FileNotFoundError: if ``checkpoint`` is a local path that is not a
            file.
        pickle.UnpicklingError: if weights-only loading refuses the file.
        ValueError: if ``prefix`` matches no key, or any key is unmatched.
    """
    check_keys('init_cfg', cfg, ('type', 'checkpoint'),
               ('prefix', 'map_location', 'unmatched_keys'))
    extra = check_prefixes('init_cfg.unmatched_keys',
                           cfg.get('unmatched_keys', ()))
    path, prefix = cfg['checkpoint'], cfg.get('prefix') or ''
    if prefix and not prefix.endswith('.'):
        prefix += '.'
    name = type(module).__name__
    if not isinstance(path, str):
        raise FileNotFoundError(
            f'init_cfg.checkpoint={path!r} of {name} must be a path or a URL')
    try:
        state = read_checkpoint(path, cfg.get('map_location', 'cpu'))
    except FileNotFoundError as e:
        raise FileNotFoundError(f'init_cfg.checkpoint of {name}: {e}') from e
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(
            f'init_cfg.checkpoint={path!r} was refused by weights-only '
            'loading, which allows tensors and the few classes that '
            f'mmengine/dsnet_mm checkpoints hold: {e}') from e
    state = {k[len(prefix):]: v for k, v in state.items()
             if k.startswith(prefix)}
    if not state:
        raise ValueError(
            f'init_cfg.prefix={prefix!r} matches no key of {path}: a '
            "classifier checkpoint keeps its backbone under 'backbone.'")
    with allow_unmatched(module, extra):
        result = module.load_state_dict(state, strict=False)
    print_log(f'loaded {len(state)} tensors under {prefix!r} from {path} '
              f'into {name}'
              + ''.join(f'; {title}: {", ".join(keys)}' for title, keys in
                        (('missing in checkpoint', result.missing_keys),
                         ('not in the model', result.unexpected_keys))
                        if keys), logger='current')
    if hasattr(module, '_params_init_info'):
        update_init_info(module, f'Pretrained (weights only): {path}')


def register_whole_loading(module: nn.Module,
                           convert: Optional[Convert] = None,
                           allowed: Sequence[str] = ()) -> None:
    """Make every state-dict load of ``module`` whole or fail.

    Args:
        module (nn.Module): The backbone.
        convert (callable, optional): ``convert(module, state_dict,
            prefix)``, which edits the keys under ``prefix`` in place into
            the module's (renames, resizes) before the check.
        allowed (Sequence[str]): Key prefixes (relative to the module) that
            may stay unmatched on either side.
    """
    module.__dict__[_ATTR] = (convert,
                              check_prefixes('unmatched_keys', allowed))
    module._register_load_state_dict_pre_hook(_hook, with_module=True)


def convert_loaded_keys(model: nn.Module, state: dict) -> tuple:
    """What a load of ``state`` into ``model`` does to it before any check:
    the conversion of every whole-loading module of ``model`` (a static
    network's keys renamed, its BN statistics given to every row, a ViT
    position embedding resized), at the module's prefix, in place, parents
    first as ``load_state_dict`` runs them. Returns the key prefixes (from
    ``model``) that its modules allow to stay unmatched."""
    allowed = []
    for name, m in model.named_modules():
        entry = m.__dict__.get(_ATTR)
        if entry is None:
            continue
        prefix = f'{name}.' if name else ''
        convert, own = entry
        if convert is not None:
            convert(m, state, prefix)
        allowed += [prefix + p for p in
                    (*own, *m.__dict__.get('_extra_unmatched', ()))]
    return tuple(allowed)


@contextmanager
def allow_unmatched(module: nn.Module,
                    prefixes: Sequence[str]) -> Iterator[None]:
    """Allow further unmatched key prefixes in loads within the block (e.g.
    those of one ``init_cfg``)."""
    old = module.__dict__.get('_extra_unmatched', ())
    module.__dict__['_extra_unmatched'] = (*old, *prefixes)
    try:
        yield
    finally:
        module.__dict__['_extra_unmatched'] = old


@contextmanager
def partial_loading(model: nn.Module) -> Iterator[None]:
    """Within the block, loads into the whole-loading modules of ``model``
    convert keys but do not check them: for a caller that loads a partial
    state dict on purpose and checks it itself."""
    modules = [m for m in model.modules() if _ATTR in m.__dict__]
    for m in modules:
        m.__dict__['_partial_loading'] = True
    try:
        yield
    finally:
        for m in modules:
            m.__dict__['_partial_loading'] = False


LAYER_KINDS = {
    'Linear': ('DSLinear', 'DSQKVLinear'),
    'Conv2d': ('DSConv2d', ),
    'BatchNorm2d': ('DSBatchNorm2d', ),
    'LayerNorm': ('DSLayerNorm', ),
}


def with_ds_layer_kinds(init_cfg):
    """``init_cfg`` (a dict, a list of them or None) with each ``layer``
    that names a torch layer kind extended by the DS layers of that kind
    (``'Linear'``: ``DSLinear`` and ``DSQKVLinear``, ``'Conv2d'``:
    ``DSConv2d``, ...), so that mmengine's initialisers, which match
    layers by class name, reach the DS layers too."""
    if init_cfg is None:
        return None
    if isinstance(init_cfg, (list, tuple)):
        return [with_ds_layer_kinds(c) for c in init_cfg]
    check_type('init_cfg', init_cfg, dict, 'a dict, a list of dicts or None')
    layer = init_cfg.get('layer')
    if layer is None:
        return init_cfg
    layers = [layer] if isinstance(layer, str) else list(layer)
    extended = list(layers)
    for kind in layers:
        extended.extend(k for k in LAYER_KINDS.get(kind, ())
                        if k not in extended)
    return dict(init_cfg, layer=extended)


@contextmanager
def _weights_only_torch_load() -> Iterator[None]:
    """Within the block, every ``torch.load`` is weights-only, whatever
    its caller asks (mmengine's loaders pass nothing, torch's
    ``load_state_dict_from_url`` passes ``weights_only=False``)."""
    original = torch.load

    def load(*args, **kwargs):
        kwargs['weights_only'] = True
        return original(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


def read_checkpoint(path: str, map_location: str = 'cpu') -> dict:
    """The state dict of a checkpoint (its ``state_dict`` entry, or the
    file itself if it is a bare state dict), read weights-only with the
    allow-list of :mod:`dsnet_mm.engine.checkpoint`.

    ``path`` is a local file, or anything mmengine's ``CheckpointLoader``
    reads: a URL (``https://...``), ``torchvision://resnet50``,
    ``open-mmlab://...`` ..., downloaded through mmengine and loaded
    weights-only too.

    Raises:
        FileNotFoundError: for a local path that is not a file.
        pickle.UnpicklingError: for a file weights-only loading refuses.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    loader = CheckpointLoader._get_checkpoint_loader(path)
    if loader.__name__ == 'load_from_local' and not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} is not a file')
    with _weights_only_torch_load():
        ckpt = CheckpointLoader.load_checkpoint(path, map_location)
    return ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt

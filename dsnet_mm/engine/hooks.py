# Copyright (c) dsnet_mm contributors. All rights reserved.
import hashlib
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from dsnet_mm.models.backbones.pretrained import convert_loaded_keys
from dsnet_mm.models.checkpoint_io import (check_state_dict,
                                           strip_module_prefix)
from dsnet_mm.ops.utils import check_int


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-1 of every trainable parameter's bytes: equal iff bit-identical."""
    sha = hashlib.sha1()
    for name, p in model.named_parameters():
        if p.requires_grad:
            sha.update(name.encode())
            sha.update(p.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


@HOOKS.register_module()
class DDPConsistencyHook(Hook):
    """Check that all ranks train the same thing, every ``interval`` iters.

    A distributed DS run that lets ranks sample different sub-networks, or
    whose parameters drift apart, trains the wrong model without an error.
    This hook gathers from every rank the digest of its parameters and the
    sub-networks it sampled (the ``subnet_*`` entries of the step's log),
    logs them, and stops the run if any rank differs.

    Args:
        interval (int): Check every ``interval`` iterations. Defaults to 100.
    """
    priority = 'LOW'

    def __init__(self, interval: int = 100) -> None:
        check_int('interval', interval, 1)
        self.interval = interval

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        world = get_world_size()
        if world == 1 or not self.every_n_train_iters(runner, self.interval):
            return
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        sampled = {k: int(v) for k, v in (outputs or {}).items()
                   if k.startswith('subnet_')}
        ranks = all_gather_object((parameter_digest(model), sampled))
        runner.logger.info(
            f'DDP check at iter {runner.iter + 1}: ' + '; '.join(
                f'rank {r}: params {d[:12]} sampled {s}'
                for r, (d, s) in enumerate(ranks)))
        if len(set(d for d, _ in ranks)) > 1 or \
                any(s != ranks[0][1] for _, s in ranks):
            raise RuntimeError(
                f'ranks disagree at iteration {runner.iter + 1}: {ranks}')


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the random generators with each checkpoint, restore on resume.

    mmengine resumes the model, optimizer, schedulers and sampler position,
    but not the generators that draw dropout masks and (with
    ``num_workers=0``) data augmentation, so a resumed run would follow
    another random path than an uninterrupted one. With this hook, and in
    deterministic mode, a run stopped at an epoch boundary and resumed
    continues exactly as if never stopped. (Dataloader worker processes keep
    their own generators, which no checkpoint can hold.)
    """
    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['random_state'] = dict(
            python=random.getstate(),
            numpy=np.random.get_state(),
            torch=torch.get_rng_state(),
            cuda=torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() else [])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('random_state')
        if state is None or not runner._resume:
            return
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if state['cuda'] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class CheckpointMatchHook(Hook):
    """Refuse a resumed or loaded checkpoint of another architecture.

    mmengine loads checkpoints with ``strict=False`` and only logs the keys
    that do not match, so a run can go on from a checkpoint of another
    architecture with part of its weights at their initial values. This hook
    stops the run instead, listing the missing, unexpected and mis-shaped
    keys.

    The checkpoint is compared as the model's load will see it: a static
    network's checkpoint (``load_from`` of an mmpretrain classifier, whose
    backbone keys are under ``backbone.``) converted by the DS backbones
    (BN statistics to every row, renamed keys, a resized position
    embedding), and, where it holds no EMA teacher, given the teacher a new
    run starts with (a copy of the loaded student: see
    :meth:`~dsnet_mm.models.classifiers.DSImageClassifier.
    start_teacher_from_student`). A file with no key under ``backbone.``
    (a bare backbone's, as torchvision's and timm's) would load nothing
    into the backbone: it is refused, naming the backbone's ``init_cfg`` to
    load it with.

    A model may name key prefixes that it has already filled from elsewhere
    (``model.loaded_elsewhere``: a dynamic detector's gate, loaded from a
    classification checkpoint when it was built); the checkpoint may lack
    those keys, and holds them to the same shapes if it has them. Prefixes
    a DS backbone lets stay unmatched (its ``unmatched_keys``) may stay
    unmatched here too.
    """
    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        state = strip_module_prefix(checkpoint.get('state_dict', checkpoint))
        backbone = getattr(model, 'backbone', None)
        if backbone is not None and \
                not any(k.startswith('backbone.') for k in state):
            raise ValueError(
                'the loaded checkpoint holds no key under \'backbone.\' '
                f'(first keys: {sorted(state)[:3]}): a bare backbone\'s '
                'file (torchvision\'s, timm\'s) would load nothing into '
                f'the {type(backbone).__name__}. Load it with '
                "model.backbone.init_cfg=dict(type='Pretrained', "
                'checkpoint=...) instead of load_from')
        start_teacher = getattr(model, 'start_teacher_from_student', None)
        if start_teacher is not None:
            start_teacher(state)
        allowed = convert_loaded_keys(model, state)
        elsewhere = (*getattr(model, 'loaded_elsewhere', ()), *allowed)
        own = {k: v for k, v in model.state_dict().items()
               if k in state or not k.startswith(elsewhere)} \
            if elsewhere else model.state_dict()
        if allowed:
            state = {k: v for k, v in state.items()
                     if k in own or not k.startswith(allowed)}
        check_state_dict(own, state, 'The loaded checkpoint')

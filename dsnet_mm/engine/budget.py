# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Fit the gate's routing to a MAdds budget at the end of each epoch."""
from typing import Optional

import torch
from mmengine.dist import all_gather_object
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from dsnet_mm.ops.utils import check_float, check_int


@HOOKS.register_module()
class RoutingBudgetHook(Hook):
    """Route a Stage II model to a mean-MAdds budget.

    After each training epoch (before the checkpoint is written, so the
    checkpoint and the validation that follows route alike), the gate's
    logits of ``num_batches`` batches are computed (the cheap part of the
    network before the gate only) and
    :meth:`~dsnet_mm.models.DSGateClassifier.fit_budget` sets the cost
    penalty at which they spend ``budget`` times the MAdds of the window's
    widest sub-network on average. Which images go wide stays the gate's
    decision; the budget fixes how many. The gate decides from the image
    alone, so training images serve as well as held-out ones, best seen as
    held-out images are (``dataloader`` over the training split with the
    test pipeline): the gate finds randomly cropped images harder, and a
    penalty fitted on them spends less on held-out images. In distributed
    training every rank's logits are gathered, so all ranks fit the same
    penalty.

    Args:
        budget (float): Mean MAdds per image as a share of the window's
            widest sub-network, between the narrowest's share and 1.
        num_batches (int, optional): Batches of ``dataloader`` to fit on.
            Defaults to None (one epoch).
        dataloader (dict, optional): Dataloader config. Defaults to None
            (the training dataloader of the run).
    """
    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW)

    def __init__(self,
                 budget: float,
                 num_batches: Optional[int] = None,
                 dataloader: Optional[dict] = None) -> None:
        check_float('budget', budget, 0, 1, low_open=True)
        if num_batches is not None:
            check_int('num_batches', num_batches, 1)
        self.budget = float(budget)
        self.num_batches = num_batches
        self.dataloader = dataloader
        self._loader = None

    @torch.no_grad()
    def after_train_epoch(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        if not hasattr(model, 'fit_budget'):
            raise TypeError('RoutingBudgetHook needs a model with a gate '
                            f'(DSGateClassifier), got {type(model).__name__}')
        if self._loader is None:  # built once, iterated every epoch
            self._loader = runner.train_dataloader \
                if self.dataloader is None else runner.build_dataloader(
                    self.dataloader, seed=runner.seed)
        was_training = model.training
        model.eval()
        logits, shape = [], None
        try:
            for k, data in enumerate(self._loader):
                if self.num_batches is not None and k >= self.num_batches:
                    break
                inputs = model.data_preprocessor(data, False)['inputs']
                shape = tuple(inputs.shape[1:])
                logits.append(model.backbone.forward_pre_gate(inputs)[1].cpu())
        finally:
            model.train(was_training)
        logits = torch.cat(
            [t for part in all_gather_object(logits) for t in part])
        spent = model.fit_budget(logits, shape, self.budget)
        runner.logger.info(
            f'routing budget {self.budget:.3f} of the widest MAdds: cost '
            f'penalty {float(model.cost_penalty):.4f}, {spent:.3f} spent on '
            f'{logits.shape[0]} images')

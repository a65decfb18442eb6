# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Stage II: what the gate-training models share (the classifier's
:class:`~dsnet_mm.models.classifiers.DSGateClassifier` and the detector's
:class:`~dsnet_mm.models.detectors.DSSGSDetector`): only the gate's
slimming head learns, the rest of the network stays frozen in eval mode."""
from typing import Dict, Tuple

import torch

from .checkpoint_io import check_stage1_head, load_stage1_weights


class GateTrainingMixin:
    """Freezing for gate training and the end of its step.

    Put it first in the bases, before
    :class:`~dsnet_mm.models.gated.GatedRoutingMixin` (or a class built on
    it, which supplies ``gate_prefix``, ``window`` and ``window_madds``) and
    the mmengine model, and call :meth:`_freeze_but_gate` at the end of
    ``__init__``. Every child module stays in eval mode whatever
    :meth:`train` is given (BN statistics included); only ``training``
    itself follows it.
    """

    # what Stage II starts afresh rather than load from Stage I
    stage1_new_prefixes: Tuple[str, ...] = ('cost_penalty', )

    def _freeze_but_gate(self) -> None:
        """Only the gate's slimming head (the parameters under
        ``gate_prefix``) keeps ``requires_grad``."""
        for name, p in self.named_parameters():
            p.requires_grad = name.startswith(self.gate_prefix)

    def init_weights(self) -> None:
        """The model's init, then the Stage I checkpoint
        ``self.stage1_checkpoint`` where set (weights-only, whole or not at
        all): every key must match but ``stage1_new_prefixes`` and, unless
        ``self.keep_stage1_head``, the gate's slimming head, which then
        starts from its init."""
        super().init_weights()
        path = self.stage1_checkpoint
        if path is None:
            return
        new_prefixes = self.stage1_new_prefixes
        if self.keep_stage1_head:
            check_stage1_head(path, self.gate_prefix)
        else:
            new_prefixes += (self.gate_prefix, )
        load_stage1_weights(self, path, new_prefixes=new_prefixes)

    def train(self, mode: bool = True):
        """Set ``training`` to ``mode``; every child stays in eval mode."""
        super().train(mode)
        for child in self.children():
            child.eval()
        return self

    def _update_gate(self, optim_wrapper, losses: Dict[str, torch.Tensor],
                     weights: torch.Tensor, target: torch.Tensor, shape,
                     complexity_weight: float,
                     madds_unit: float) -> Dict[str, torch.Tensor]:
        """The end of a gate-training step (inside the optimizer wrapper's
        context): ``losses`` plus ``complexity_weight * (mean MAdds of the
        routing weights / madds_unit) ** 2``, refused if not finite, one
        update; returns the log variables with the mean MAdds and the share
        of easy targets."""
        madds = weights.new_tensor(self.window_madds(shape),
                                   dtype=torch.float32)
        # elementwise in float32: autocast would run a matmul in bfloat16
        # or float16 (which overflows past 65504)
        mean_madds = (weights.float() * madds).sum(-1).mean()
        if complexity_weight:
            losses['loss_complexity'] = complexity_weight * (
                mean_madds / madds_unit)**2
        loss, log_vars = self.parse_losses(losses)
        if not torch.isfinite(loss):
            window = ', '.join(s.name for s in self.window)
            raise FloatingPointError(
                f'Stage II loss is {loss.item()} '
                f'({ {k: float(v) for k, v in losses.items()} }) in the '
                f'routed model over {window}; nothing was updated and the '
                'last checkpoint is untouched')
        optim_wrapper.update_params(loss)
        log_vars['mean_madds'] = mean_madds.detach()
        log_vars['easy_ratio'] = (target == 0).float().mean()
        return log_vars

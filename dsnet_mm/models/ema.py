# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The EMA teacher of Stage I, correct wherever the model lives."""
import torch.nn as nn
from mmengine.model import ExponentialMovingAverage


class LiveEMA(ExponentialMovingAverage):
    """mmengine's :class:`~mmengine.model.ExponentialMovingAverage` whose
    average is always written into the averaged module's live tensors.

    mmengine builds ``avg_parameters`` (the tensors of the averaged module's
    state dict) once, in ``__init__``. ``.to(device)``, ``.cuda()``, a dtype
    change (``.half()``, ``.double()``) and ``load_state_dict(...,
    assign=True)`` give the module's parameters and buffers new tensors;
    mmengine's dict then keeps the old ones, every update writes into them,
    and the module that runs as the teacher keeps the weights it had before
    the move for the whole run. mmengine's ``Runner`` moves the model to the
    GPU after building it, so every GPU run would distil from the initial
    network. Here the dict is rebuilt from the module at every update (one
    pass over its state dict, next to the update's pass over every tensor),
    so the average follows the module across any move, ``deepcopy``,
    ``load_state_dict`` and resume.

    The teacher is a part of the model, so it moves with it; an update
    whose source lives on another device or in another floating dtype (a
    part of the model moved on its own) is refused rather than averaged
    across devices.

    Args: as :class:`~mmengine.model.ExponentialMovingAverage`.
    """

    def _live_tensors(self) -> dict:
        return self.module.state_dict() if self.update_buffers \
            else dict(self.module.named_parameters())

    def update_parameters(self, model: nn.Module) -> None:
        self.avg_parameters = self._live_tensors()
        self._check_placement(model)
        super().update_parameters(model)

    def _check_placement(self, model: nn.Module) -> None:
        """Refuse a source that lives elsewhere than the teacher."""
        source = next((p for p in model.parameters()
                       if p.is_floating_point()), None)
        mine = next((p for p in self.module.parameters()
                     if p.is_floating_point()), None)
        if source is None or mine is None:
            return
        if source.device != mine.device or source.dtype != mine.dtype:
            raise RuntimeError(
                f'the EMA teacher lives on {mine.device} in {mine.dtype} but '
                f'the student on {source.device} in {source.dtype}: move '
                'the whole model (model.to(device), model.float()), not a '
                'part of it, so that the teacher moves with the student')

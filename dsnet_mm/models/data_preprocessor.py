# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A classification data preprocessor for batches of several views."""
import copy

import numpy as np
import torch
from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.registry import MODELS


@MODELS.register_module()
class MultiViewClsDataPreprocessor(ClsDataPreprocessor):
    """``ClsDataPreprocessor`` for the ``V`` views of mmpretrain's
    ``MultiView`` transform, as MvCo's Stage I needs them.

    After ``PackInputs`` and the default collate, such a batch's ``inputs``
    is a list of ``V`` lists (one per view) of ``B`` images. Each view is
    processed as ``ClsDataPreprocessor`` would process a batch, and the
    result's ``inputs`` is a list of ``V`` tensors ``[B, C, H, W]``. Batch
    augments (Mixup, CutMix) draw their partner permutation, ratio and box
    once: the random state (torch and numpy, which mmpretrain's batch
    augments use) is restored before every view, so every view of an image is
    mixed with the same partner's view by the same ratio and its mixed label
    is one (a cross-view target must describe the same mixture, see
    ``docs/reference/dsnet_pp.md``, "MvCo"). A single-view batch is
    processed unchanged, so validation needs no other preprocessor. Takes
    ``ClsDataPreprocessor``'s arguments.
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = data['inputs']
        if not (isinstance(inputs, (list, tuple)) and inputs
                and isinstance(inputs[0], (list, tuple))):
            return super().forward(data, training)
        samples = data.get('data_samples')
        # the label mixing sets gt_score on the samples: each later view
        # gets a fresh copy to mix, and the first view's samples are kept
        fresh = [copy.deepcopy(samples) for _ in inputs[1:]]
        torch_state, np_state = torch.get_rng_state(), np.random.get_state()
        views, out_samples = [], None
        for v, view in enumerate(inputs):
            torch.set_rng_state(torch_state)
            np.random.set_state(np_state)
            out = super().forward(
                dict(inputs=view, data_samples=samples if v == 0 else
                     fresh[v - 1]), training)
            views.append(out['inputs'])
            if v == 0:
                out_samples = out['data_samples']
        return dict(inputs=views, data_samples=out_samples)

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The DS detector: a single-stage mmdet detector over a DS backbone, trained
by the sandwich rule."""
from typing import Optional

from mmdet.models.detectors import SingleStageDetector
from mmdet.registry import MODELS

from dsnet_mm.ops.utils import check_type
from ..sandwich import check_sandwich_sampling
from .sandwich import SandwichDetectorMixin, float32_outputs, pad_to

__all__ = ['DSSingleStageDetector', 'pad_to']


@MODELS.register_module()
class DSSingleStageDetector(SandwichDetectorMixin, SingleStageDetector):
    """An mmdet single-stage detector (SSD, RetinaNet) over a DS backbone,
    trained by the sandwich rule.

    The sub-network interface, the zero-padded features and the sandwich
    step are :class:`~dsnet_mm.models.detectors.sandwich.
    SandwichDetectorMixin`'s, shared with
    :class:`~dsnet_mm.models.detectors.DSTwoStageDetector`.

    The neck and head are static and built for the widest widths: the
    backbone's outputs at the largest architecture
    (``backbone.out_widths``). A narrower sub-network's outputs are
    zero-padded to those widths (:func:`pad_to`), which for a plain-conv
    consumer equals slicing its input weights.

    One ``train_step`` runs, on the same batch, the largest architecture,
    ``num_random`` random sub-networks and the smallest (DS-Net's sandwich
    rule; the random ones drawn as the classifier draws them, by
    ``sample_random_subnets`` of
    :mod:`dsnet_mm.models.classifiers.ds_image_classifier`),
    back-propagates each one's detection losses as soon as they are
    computed (the gradients of their sum accumulate) and makes a single
    optimizer step, as the slimmable-networks detection port does. Every
    width learns from the ground truth: detection has no soft target of the
    in-place bootstrapping kind here.

    For testing, the backbone's active sub-network is the one that runs
    (:meth:`subnet`, :meth:`set_subnet`, or the backbone's own; the largest
    by default): mmdet's ``val_step``/``test_step`` run it unchanged.

    Under autocast (mixed precision) the head's outputs are taken to
    float32 (a forward hook): its losses, box decoding and NMS are computed
    from float32 scores and box deltas.

    Under distributed training use the project's wrapper,
    ``model_wrapper_cfg=dict(type='DSDistributedDataParallel',
    find_unused_parameters=True)``: mmengine's runs one plain forward.

    Args:
        backbone (dict): A DS backbone config, e.g.
            ``dict(type='mmpretrain.DSMobileNetV1', out_indices=(2, 3, 4))``.
        neck (dict, optional): Neck config; its ``in_channels`` must be the
            backbone's ``out_widths``. Defaults to None.
        bbox_head (dict): Head config (its ``in_channels`` must be those
            widths when there is no neck).
        train_cfg (dict, optional): mmdet's train config of the head.
        test_cfg (dict, optional): mmdet's test config of the head.
        data_preprocessor (dict, optional): ``DetDataPreprocessor`` config.
        num_random (int): Random sub-networks per step. Defaults to 2.
        seed (int): Seed of the sub-network sampler. Defaults to 0.
        sampling (str): ``'list'`` or ``'usnet'`` (see
            :class:`~dsnet_mm.models.classifiers.DSImageClassifier`).
            Defaults to ``'list'``.
        usnet_divisor (int): Width multiple of the ``'usnet'`` widths.
            Defaults to 1.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 bbox_head: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 num_random: int = 2,
                 seed: int = 0,
                 sampling: str = 'list',
                 usnet_divisor: int = 1,
                 init_cfg: Optional[dict] = None) -> None:
        check_type('backbone', backbone, dict, 'a backbone config dict')
        check_type('bbox_head', bbox_head, dict, 'a head config dict')
        check_sandwich_sampling(num_random, seed, sampling, usnet_divisor)
        super().__init__(backbone, neck=neck, bbox_head=bbox_head,
                         train_cfg=train_cfg, test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        self._check_ds_backbone()
        if neck is not None:
            self._check_consumer(backbone, 'neck', neck)
        else:
            self._check_consumer(backbone, 'bbox_head', bbox_head)
        if not hasattr(self.bbox_head, 'loss_cls'):
            # mmdet 3.3.0's BaseDenseHead._predict_by_feat_single reads
            # self.loss_cls, which SSDHead never sets, so SSD cannot predict
            # (open-mmlab/mmdetection#11063, #11780; fix PR #11524 unmerged):
            # None makes that check false, as the head's own loss intends
            self.bbox_head.loss_cls = None
        self.bbox_head.register_forward_hook(float32_outputs)
        self._init_sandwich(num_random, seed, sampling, usnet_divisor)

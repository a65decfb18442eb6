# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The two-stage DS detector: an mmdet two-stage detector (Faster R-CNN)
over a DS backbone, trained by the sandwich rule."""
from typing import Optional

from mmdet.models.detectors import TwoStageDetector
from mmdet.registry import MODELS

from dsnet_mm.ops.utils import check_int, check_type
from ..sandwich import check_sandwich_sampling
from .sandwich import SandwichDetectorMixin, float32_outputs


@MODELS.register_module()
class DSTwoStageDetector(SandwichDetectorMixin, TwoStageDetector):
    """An mmdet two-stage detector (Faster R-CNN: RPN and RoI head) over a
    DS backbone, trained by the sandwich rule.

    The sub-network interface, the zero-padded features and the sandwich
    step are :class:`~dsnet_mm.models.detectors.sandwich.
    SandwichDetectorMixin`'s, as for
    :class:`~dsnet_mm.models.detectors.DSSingleStageDetector`: the neck
    (or, without one, the RPN head) is built for the backbone's widest
    output widths and reads a narrower sub-network's outputs zero-padded to
    them; one ``train_step`` back-propagates, member by member (largest,
    ``num_random`` random, smallest), the sum of mmdet's ``loss``: the RPN's
    ``loss_rpn_cls`` and ``loss_rpn_bbox`` and the RoI head's ``loss_cls``
    and ``loss_bbox``, then makes one optimizer step. The RPN and RoI head
    are shared by every sub-network, as the single-stage detector's head
    is.

    **MAdds** (``two_stage_complexity`` of
    :mod:`dsnet_mm.models.subnet_table`, which ``SubnetTestLoop`` and
    ``tools/analysis/get_flops.py`` use): backbone, neck and the RPN head's
    raw outputs per image as for a single-stage detector (no proposal
    decoding or NMS), plus the RoI head at a fixed number of proposals per
    image, ``madds_proposals`` (default: the test config's
    ``rpn.max_per_img``, 1000 for mmdet's Faster R-CNN: the number the RPN
    hands to the RoI head when its NMS keeps enough boxes, as on a real
    image; mmdet's ``get_flops.py`` counts the proposals of the image it is
    given, at most that many). The RoI head's cost does not depend on the
    sub-network (it reads the neck's fixed-width maps); it is counted
    on one proposal and multiplied by their number (every layer of a RoI
    head runs per proposal). RoI pooling is not counted.

    Under autocast the RPN's and the RoI box head's outputs are taken to
    float32 (forward hooks), as the single-stage head's are.

    Args:
        backbone (dict): A DS backbone config, e.g.
            ``dict(type='mmpretrain.DSResNet', depth=50,
            out_indices=(0, 1, 2, 3))``.
        neck (dict, optional): Neck config; its ``in_channels`` must be the
            backbone's ``out_widths``. Defaults to None.
        rpn_head (dict): mmdet's RPN head config (its ``in_channels`` must
            be the backbone's ``out_widths`` when there is no neck).
        roi_head (dict): mmdet's RoI head config.
        train_cfg (dict, optional): mmdet's train config (``rpn``,
            ``rpn_proposal``, ``rcnn``); None for testing only.
        test_cfg (dict): mmdet's test config (``rpn``, ``rcnn``).
        data_preprocessor (dict, optional): ``DetDataPreprocessor`` config.
        num_random (int): Random sub-networks per step. Defaults to 2.
        seed (int): Seed of the sub-network sampler. Defaults to 0.
        sampling (str): ``'list'`` or ``'usnet'`` (see
            :class:`~dsnet_mm.models.classifiers.DSImageClassifier`).
            Defaults to ``'list'``.
        usnet_divisor (int): Width multiple of the ``'usnet'`` widths.
            Defaults to 1.
        madds_proposals (int, optional): Proposals per image at which the
            RoI head's MAdds are counted; None takes
            ``test_cfg.rpn.max_per_img``. Defaults to None.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 rpn_head: Optional[dict] = None,
                 roi_head: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 num_random: int = 2,
                 seed: int = 0,
                 sampling: str = 'list',
                 usnet_divisor: int = 1,
                 madds_proposals: Optional[int] = None,
                 init_cfg: Optional[dict] = None) -> None:
        check_type('backbone', backbone, dict, 'a backbone config dict')
        check_type('rpn_head', rpn_head, dict, 'an RPN head config dict')
        check_type('roi_head', roi_head, dict, 'a RoI head config dict')
        check_type('train_cfg', train_cfg, (type(None), dict),
                   "None (testing only) or mmdet's train config, a dict "
                   "with 'rpn', 'rpn_proposal' and 'rcnn'")
        self._check_test_cfg(test_cfg)
        check_sandwich_sampling(num_random, seed, sampling, usnet_divisor)
        if madds_proposals is None:
            madds_proposals = test_cfg['rpn']['max_per_img']
        else:
            check_int('madds_proposals', madds_proposals, 1)
        super().__init__(backbone, neck=neck, rpn_head=rpn_head,
                         roi_head=roi_head, train_cfg=train_cfg,
                         test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        self._check_ds_backbone()
        if neck is not None:
            self._check_consumer(backbone, 'neck', neck)
        else:
            self._check_consumer(backbone, 'rpn_head', rpn_head)
        self.rpn_head.register_forward_hook(float32_outputs)
        if getattr(self.roi_head, 'bbox_head', None) is not None:
            self.roi_head.bbox_head.register_forward_hook(float32_outputs)
        self.madds_proposals = madds_proposals
        self._init_sandwich(num_random, seed, sampling, usnet_divisor)

    @staticmethod
    def _check_test_cfg(test_cfg) -> None:
        """mmdet's two-stage test config: ``rpn`` (with ``max_per_img``, a
        positive int) and ``rcnn``."""
        check_type('test_cfg', test_cfg, dict,
                   "mmdet's test config, a dict with 'rpn' and 'rcnn'")
        for key in ('rpn', 'rcnn'):
            if key not in test_cfg:
                raise ValueError(
                    f'test_cfg has no {key!r}: a two-stage detector needs '
                    f"test_cfg=dict(rpn=dict(...), rcnn=dict(...)), got "
                    f'keys {sorted(test_cfg)}')
        check_type('test_cfg.rpn', test_cfg['rpn'], dict,
                   'a dict (nms_pre, max_per_img, nms, min_bbox_size)')
        if 'max_per_img' not in test_cfg['rpn']:
            raise ValueError(
                'test_cfg.rpn has no max_per_img: the proposals per image '
                'that the RPN hands to the RoI head (1000 in mmdet\'s '
                'Faster R-CNN)')
        check_int('test_cfg.rpn.max_per_img', test_cfg['rpn']['max_per_img'],
                  1)

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The two-stage DS detector (Faster R-CNN over a DS-ResNet): its configs,
the sandwich step on the RPN and RoI losses, equality with mmdet's
FasterRCNN at full width, per-sub-network prediction and MAdds, and its
refused options."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope

mmdet = pytest.importorskip('mmdet')  # the optional 'det' extra
from mmdet.registry import MODELS  # noqa: E402
from mmdet.testing import demo_mm_inputs  # noqa: E402

import dsnet_mm  # noqa: E402,F401 (registers the DS models)
from dsnet_mm.analysis import subnet_complexity  # noqa: E402
from dsnet_mm.models.detectors import DSTwoStageDetector  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VOC_CFG = osp.join(ROOT, 'configs/det/faster-rcnn_ds-resnet50_fpn_voc0712.py')
DIGITS_CFG = osp.join(ROOT, 'configs/det/faster-rcnn_ds-resnet_digits_voc.py')
NUM_CLASSES = 3
FPN = 8  # FPN channels
FC = 16  # the RoI box head's fc width


@pytest.fixture(autouse=True)
def mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def backbone_cfg(type_: str = 'mmpretrain.DSResNet') -> dict:
    """A ResNet-18 of a few channels (streams 8/16/32/64); the DS one has
    the default ratios 0.25/0.5/0.75/1.0. No zero-initialised last BN: the
    first step's gradients reach every conv."""
    return dict(type=type_, depth=18, stem_channels=8, base_channels=8,
                out_indices=(1, 2, 3), zero_init_residual=False)


def faster_rcnn_cfg(**kwargs) -> ConfigDict:
    """mmdet's Faster R-CNN with FPN, shrunk; DSTwoStageDetector over the
    tiny DS-ResNet unless ``kwargs`` say otherwise."""
    cfg = dict(
        type='DSTwoStageDetector',
        num_random=1,
        data_preprocessor=dict(
            type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
            pad_size_divisor=32),
        backbone=backbone_cfg(),
        neck=dict(type='FPN', in_channels=[16, 32, 64], out_channels=FPN,
                  num_outs=3),
        rpn_head=dict(
            type='RPNHead', in_channels=FPN, feat_channels=FPN,
            anchor_generator=dict(type='AnchorGenerator', scales=[2],
                                  ratios=[0.5, 1.0, 2.0],
                                  strides=[8, 16, 32]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                            target_means=[.0] * 4, target_stds=[1.0] * 4),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True),
            loss_bbox=dict(type='L1Loss')),
        roi_head=dict(
            type='StandardRoIHead',
            bbox_roi_extractor=dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=7,
                               sampling_ratio=0),
                out_channels=FPN, featmap_strides=[8, 16, 32]),
            bbox_head=dict(
                type='Shared2FCBBoxHead', in_channels=FPN,
                fc_out_channels=FC, roi_feat_size=7,
                num_classes=NUM_CLASSES,
                bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                target_means=[0.] * 4,
                                target_stds=[0.1, 0.1, 0.2, 0.2]),
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False),
                loss_bbox=dict(type='L1Loss'))),
        train_cfg=dict(
            rpn=dict(
                assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7,
                              neg_iou_thr=0.3, min_pos_iou=0.3,
                              match_low_quality=True, ignore_iof_thr=-1),
                sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5,
                             neg_pos_ub=-1, add_gt_as_proposals=False),
                allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=200, max_per_img=50,
                              nms=dict(type='nms', iou_threshold=0.7),
                              min_bbox_size=0),
            rcnn=dict(
                assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                              neg_iou_thr=0.5, min_pos_iou=0.5,
                              match_low_quality=False, ignore_iof_thr=-1),
                sampler=dict(type='RandomSampler', num=32,
                             pos_fraction=0.25, neg_pos_ub=-1,
                             add_gt_as_proposals=True),
                pos_weight=-1, debug=False)),
        test_cfg=dict(
            rpn=dict(nms_pre=200, max_per_img=40,
                     nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0),
            # every class score passes: an untrained model predicts boxes
            rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=10)))
    cfg.update(kwargs)
    return ConfigDict(cfg)


def tiny_detector(**kwargs) -> DSTwoStageDetector:
    torch.manual_seed(0)
    return MODELS.build(faster_rcnn_cfg(**kwargs))


def tiny_batch() -> dict:
    return demo_mm_inputs(2, [(3, 64, 64)] * 2, num_items=[2, 3],
                          num_classes=NUM_CLASSES)


# --- configs --------------------------------------------------------------
@pytest.mark.parametrize('path,proposals', [(VOC_CFG, 1000),
                                            (DIGITS_CFG, 100)])
def test_config_files_build_the_two_stage_detector(path, proposals):
    cfg = Config.fromfile(path)
    model = MODELS.build(cfg.model)
    assert isinstance(model, DSTwoStageDetector)
    assert type(model.rpn_head).__name__ == 'RPNHead'
    assert type(model.roi_head).__name__ == 'StandardRoIHead'
    assert model.madds_proposals == proposals
    assert len(model.space.subnets) == 4


def without_scope(cfg):
    """``cfg`` without the ``_scope_`` keys that inheriting an
    ``mmdet::`` config adds."""
    if isinstance(cfg, dict):
        return {k: without_scope(v) for k, v in cfg.items()
                if k != '_scope_'}
    if isinstance(cfg, (list, tuple)):
        return [without_scope(v) for v in cfg]
    return cfg


def test_voc_config_changes_only_what_the_ds_backbone_needs():
    ours = Config.fromfile(VOC_CFG)
    theirs = Config.fromfile(osp.join(
        osp.dirname(mmdet.__file__),
        '.mim/configs/pascal_voc/faster-rcnn_r50_fpn_1x_voc0712.py'))
    for key in ('neck', 'rpn_head', 'roi_head', 'train_cfg', 'test_cfg',
                'data_preprocessor'):
        assert ours.model[key] == theirs.model[key], key
    for key in ('train_dataloader', 'test_dataloader', 'param_scheduler',
                'optim_wrapper', 'train_cfg', 'val_evaluator'):
        assert without_scope(ours[key]) == without_scope(theirs[key]), key


# --- training -------------------------------------------------------------
def test_sandwich_step_gives_finite_rpn_and_roi_losses_per_member():
    model = tiny_detector()
    model.train()
    seen = []

    def forward(*args, spec=None, **kwargs):
        losses = model(*args, spec=spec, **kwargs)
        seen.append((spec.name, {k: sum(v) if isinstance(v, list) else v
                                 for k, v in losses.items()}))
        return losses

    before = {n: p.detach().clone()
              for n, p in model.backbone.named_parameters()}
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    out = model.train_step(tiny_batch(), optim, forward=forward)
    assert len(seen) == 3  # largest, one random, smallest
    assert seen[0][0] == 'largest'
    assert seen[-1][0] == model.space.smallest.name
    for name, losses in seen:
        for key in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls',
                    'loss_bbox'):
            assert torch.isfinite(losses[key]).all(), (name, key)
    total = sum(sum(v.sum() for k, v in losses.items() if 'loss' in k)
                for _, losses in seen)
    assert torch.allclose(out['loss'], total.detach(), rtol=1e-5)
    for key in ('loss_largest', 'loss_random0', 'loss_smallest',
                'loss_rpn_cls', 'loss_cls', 'acc'):
        assert key in out
    assert model.sandwich_iter == 1
    # every stage of the backbone moved, the widest slices included
    moved = [n for n, p in model.backbone.named_parameters()
             if not torch.equal(p, before[n])]
    for stage in ('conv1', 'layer1', 'layer2', 'layer3', 'layer4'):
        assert any(n.startswith(stage) for n in moved), stage
    widest = model.backbone.layer4[-1].conv2.weight
    assert not torch.equal(widest[-1], before['layer4.1.conv2.weight'][-1])


def test_full_width_losses_equal_mmdets_faster_rcnn():
    """The DS detector at its largest architecture is mmdet's FasterRCNN
    over mmpretrain's ResNet with the same weights: the same RPN and RoI
    losses (the samplers seeded alike)."""
    ds = tiny_detector()
    ref_cfg = faster_rcnn_cfg(type='FasterRCNN',
                              backbone=backbone_cfg('mmpretrain.ResNet'))
    del ref_cfg['num_random']
    ref = MODELS.build(ref_cfg)
    for name in ('backbone', 'neck', 'rpn_head', 'roi_head'):
        getattr(ds, name).load_state_dict(getattr(ref, name).state_dict())
    ds.train()
    ref.train()
    data = ds.data_preprocessor(tiny_batch(), True)
    losses = []
    for model, kwargs in ((ds, dict(spec=ds.space.largest)), (ref, {})):
        torch.manual_seed(1)
        losses.append(model(data['inputs'],
                            copy.deepcopy(data['data_samples']),
                            mode='loss', **kwargs))
    ours, theirs = losses
    assert set(ours) == set(theirs)
    for key in theirs:
        a = torch.stack(ours[key]) if isinstance(ours[key], list) \
            else ours[key]
        b = torch.stack(theirs[key]) if isinstance(theirs[key], list) \
            else theirs[key]
        assert (a - b).abs().max() < 1e-5, key
    assert theirs['loss_cls'].item() > 0


# --- per-sub-network prediction and MAdds ------------------------------
def test_each_subnet_predicts_boxes():
    model = tiny_detector()
    model.eval()
    data = model.data_preprocessor(tiny_batch(), False)
    for spec in (model.space.smallest, model.space.largest):
        with torch.no_grad():
            results = model(data['inputs'],
                            copy.deepcopy(data['data_samples']),
                            mode='predict', spec=spec)
        for result in results:
            bboxes = result.pred_instances.bboxes
            assert bboxes.ndim == 2 and bboxes.shape[1] == 4
            assert len(bboxes) > 0
    assert model.active_subnet == model.space.largest


def test_narrower_subnets_count_fewer_madds_and_the_roi_head_per_proposal():
    model = tiny_detector()
    # ratios 0.25 / 0.5 / 0.75 / 1.0: the last is the largest architecture
    rows = subnet_complexity(model, model.space.subnets, (3, 64, 64))
    for key in ('madds', 'backbone_madds'):
        counts = [r[key] for r in rows]
        assert all(a < b for a, b in zip(counts, counts[1:])), key
    # the RoI head: Shared2FCBBoxHead's two fcs, classifier and regressor,
    # per proposal, times test_cfg.rpn.max_per_img
    per_proposal = (FPN * 49 * FC + FC * FC + FC * (NUM_CLASSES + 1) +
                    FC * 4 * NUM_CLASSES)
    more = tiny_detector(madds_proposals=41)
    (row, ) = subnet_complexity(more, [more.space.subnets[-1]], (3, 64, 64))
    assert row['madds'] - rows[-1]['madds'] == per_proposal
    assert model.madds_proposals == 40
    assert row['params'] == rows[-1]['params']


# --- refused options ---------------------------------------------------
@pytest.mark.parametrize('kwargs,error,match', [
    (dict(madds_proposals=0), ValueError, 'madds_proposals'),
    (dict(num_random=-1), ValueError, 'num_random'),
    (dict(sampling='all'), ValueError, 'sampling'),
    (dict(rpn_head=None), TypeError, 'rpn_head'),
    (dict(roi_head='StandardRoIHead'), TypeError, 'roi_head'),
    (dict(test_cfg=dict(rcnn=dict())), ValueError, "test_cfg has no 'rpn'"),
    (dict(test_cfg=dict(rpn=dict(max_per_img=0), rcnn=dict())), ValueError,
     'test_cfg.rpn.max_per_img'),
    (dict(neck=dict(type='FPN', in_channels=[16, 32, 32], out_channels=FPN,
                    num_outs=3)), ValueError, 'model.neck.in_channels'),
    (dict(backbone=backbone_cfg('mmpretrain.ResNet')), ValueError,
     'not a DS backbone'),
])
def test_a_bad_option_is_refused_naming_the_field(kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny_detector(**kwargs)


def test_static_export_is_refused_by_name():
    """No silent backbone-only export: the two-stage detector has no static
    form, and the tools' builder says so."""
    from dsnet_mm.deploy import static_subnet
    model = tiny_detector().eval()
    with pytest.raises(ValueError, match='no static form of a two-stage'):
        static_subnet(model, model.backbone.space.smallest)

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The DS detector in mmdet: DS backbones swapped into mmdet's own VOC
configs, zero-padded features, the sandwich step and weights-only init."""
import copy
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config, ConfigDict
from mmengine.logging import HistoryBuffer
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

pytest.importorskip('mmdet')  # the optional 'det' extra
from mmdet.registry import MODELS  # noqa: E402
from mmdet.testing import demo_mm_inputs  # noqa: E402

import dsnet_mm  # noqa: E402,F401 (registers the DS models)
from dsnet_mm.engine import DSDistributedDataParallel  # noqa: E402
from dsnet_mm.models.detectors import (DSSingleStageDetector,  # noqa: E402
                                       pad_to)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SSD_CFG = osp.join(ROOT, 'configs/det/ssd300_ds-mbnet_voc0712.py')
RETINA_CFG = osp.join(ROOT, 'configs/det/retinanet_ds-resnet50_fpn_voc0712.py')
DIGITS_CFG = osp.join(ROOT, 'configs/det/ssd_ds-mbnet_digits_voc.py')

# a DS-MobileNetV1 of a few channels: stages at strides 2/4/8/16, three
# listed sub-networks (stage3 12/18/24, stage4 16/24/32) and the largest
TINY_ARCH = dict(
    stem=(8, 2),
    stages=[('stage1', 8, 1, 1), ('stage2', 16, 1, 2), ('stage3', 24, 1, 2),
            ('stage4', 32, 1, 2)])
TINY_SUBNETS = dict(
    smallest=dict(stem=4, stage1=4, stage2=8, stage3=12, stage4=16),
    widest=dict(stem=4, stage1=4, stage2=8, stage3=24, stage4=32),
    num=3)
NUM_CLASSES = 3


@pytest.fixture(autouse=True)
def mmdet_scope():
    """mmdet's scope for each test, and the previous one restored after
    it (the other test modules build in mmpretrain's)."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def tiny_detector_cfg(**kwargs) -> ConfigDict:
    """A RetinaNet over the tiny DS-MobileNetV1: FPN on stages 3 and 4."""
    cfg = dict(
        type='DSSingleStageDetector',
        num_random=1,
        data_preprocessor=dict(
            type='DetDataPreprocessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=16),
        backbone=dict(
            type='mmpretrain.DSMobileNetV1',
            arch=TINY_ARCH,
            subnets=TINY_SUBNETS,
            out_indices=(2, 3)),
        neck=dict(type='FPN', in_channels=[24, 32], out_channels=8,
                  num_outs=2),
        bbox_head=dict(
            type='RetinaHead',
            num_classes=NUM_CLASSES,
            in_channels=8,
            stacked_convs=1,
            feat_channels=8,
            anchor_generator=dict(
                type='AnchorGenerator',
                octave_base_scale=4,
                scales_per_octave=1,
                ratios=[1.0],
                strides=[8, 16]),
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[.0, .0, .0, .0],
                target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0,
                          alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                          neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
            sampler=dict(type='PseudoSampler'),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                      nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=20))
    cfg.update(kwargs)
    return ConfigDict(cfg)


def tiny_detector(**kwargs) -> DSSingleStageDetector:
    torch.manual_seed(0)
    return MODELS.build(tiny_detector_cfg(**kwargs))


def tiny_batch() -> dict:
    return demo_mm_inputs(2, [(3, 64, 64)] * 2, num_items=[2, 3],
                          num_classes=NUM_CLASSES)


def sgd(model: nn.Module, lr: float = 0.1) -> OptimWrapper:
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=lr))


# --- zero-padding equals slicing the consumer's input weights -----------
def _ssd_neck():
    return MODELS.build(dict(
        type='SSDNeck', in_channels=(24, 32), out_channels=(24, 32, 16),
        level_strides=(2, ), level_paddings=(1, ), l2_norm_scale=None))


def _fpn(add_extra_convs):
    return MODELS.build(dict(
        type='FPN', in_channels=[24, 32], out_channels=8, num_outs=3,
        add_extra_convs=add_extra_convs))


def _ssd_head():
    return MODELS.build(dict(
        type='SSDHead', num_classes=NUM_CLASSES, in_channels=(24, 32, 16),
        anchor_generator=dict(
            type='SSDAnchorGenerator', scale_major=False, strides=[8, 16, 32],
            ratios=[[2], [2], [2]], min_sizes=[8, 16, 32],
            max_sizes=[16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                        target_means=[.0, .0, .0, .0],
                        target_stds=[0.1, 0.1, 0.2, 0.2])))


# (builder, the conv reading the last backbone feature, its widest input)
CONSUMERS = {
    'SSDNeck first extra 1x1': (_ssd_neck,
                                lambda m: m.extra_layers[0][0].conv, 32),
    'FPN lateral 1x1': (lambda: _fpn('on_input'),
                        lambda m: m.lateral_convs[1].conv, 32),
    "FPN 'on_input' P6 3x3": (lambda: _fpn('on_input'),
                              lambda m: m.fpn_convs[2].conv, 32),
    'SSDHead cls 3x3': (_ssd_head, lambda m: m.cls_convs[1][0], 32),
}


@pytest.mark.parametrize('name', sorted(CONSUMERS))
def test_zero_padding_equals_slicing_the_consumers_input_weights(name):
    build, get_conv, widest = CONSUMERS[name]
    torch.manual_seed(0)
    conv = get_conv(build())
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == widest
    x = torch.randn(2, 20, 7, 7)  # a sub-network's output, 20 of 32 wide
    (padded, ) = pad_to([x], [widest])
    sliced = F.conv2d(x, conv.weight[:, :20], conv.bias, conv.stride,
                      conv.padding)
    assert torch.allclose(conv(padded), sliced, atol=1e-5)


def test_pad_to_refuses_a_feature_wider_than_its_consumer():
    with pytest.raises(ValueError, match='feature map 0 has 40 channels'):
        pad_to([torch.zeros(1, 40, 2, 2)], [32])


def test_narrower_subnet_reaches_the_neck_zero_padded():
    model = tiny_detector().eval()
    x = torch.randn(1, 3, 64, 64)
    with model.subnet('smallest'):
        raw = model.backbone(x)
        feats = pad_to(raw, model.backbone.out_widths)
    assert [f.shape[1] for f in raw] == [12, 16]
    assert [f.shape[1] for f in feats] == [24, 32]
    assert all(f[:, r.shape[1]:].abs().sum() == 0 and
               torch.equal(f[:, :r.shape[1]], r) for f, r in zip(feats, raw))


# --- the sandwich step ----------------------------------------------------
class StepSpy:
    """Counts optimizer steps and keeps the gradients each step saw."""

    def __init__(self, optim_wrapper: OptimWrapper) -> None:
        self.steps, self.grads = 0, []
        step = optim_wrapper.optimizer.step

        def spy(*args, **kwargs):
            self.steps += 1
            self.grads.append({
                p: p.grad.clone() for g in optim_wrapper.param_groups
                for p in g['params'] if p.grad is not None})
            return step(*args, **kwargs)

        optim_wrapper.optimizer.step = spy


def _ran_specs(model):
    """Record the sub-network of every forward of ``model``."""
    ran = []
    forward = model.forward

    def record(*args, **kwargs):
        ran.append(kwargs.get('spec'))
        return forward(*args, **kwargs)

    model.forward = record
    return ran


def test_sandwich_step_runs_each_member_and_steps_once():
    model = tiny_detector(num_random=2).train()
    expected = [model.space.largest, *model.sample_random_subnets(),
                model.space.smallest]
    ran = _ran_specs(model)
    optim_wrapper = sgd(model)
    spy = StepSpy(optim_wrapper)
    log_vars = model.train_step(tiny_batch(), optim_wrapper)
    assert ran == expected
    assert spy.steps == 1
    assert int(model.sandwich_iter) == 1
    members = ['largest', 'random0', 'random1', 'smallest']
    assert torch.allclose(log_vars['loss'],
                          sum(log_vars[f'loss_{m}'] for m in members))
    assert torch.allclose(log_vars['loss'],
                          log_vars['loss_cls'] + log_vars['loss_bbox'])
    assert log_vars['subnet_random0'].item() == expected[1].stats


def test_sandwich_step_is_one_sgd_step_along_the_members_summed_grads():
    model = tiny_detector().train()
    reference = copy.deepcopy(model)
    members = [s for _, s in model.sandwich()]
    batch = tiny_batch()
    # the gradient of the sum of every member's detection losses
    data = reference.data_preprocessor(copy.deepcopy(batch), True)
    for spec in members:
        losses = reference(data['inputs'], data['data_samples'], mode='loss',
                           spec=spec)
        reference.parse_losses(losses)[0].backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optim_wrapper = sgd(model, lr=0.1)
    spy = StepSpy(optim_wrapper)
    model.train_step(batch, optim_wrapper)
    assert spy.steps == 1
    for (name, p), (_, q) in zip(model.named_parameters(),
                                 reference.named_parameters()):
        if q.grad is None:
            assert torch.equal(p, before[name]), name
            continue
        assert torch.allclose(spy.grads[0][p], q.grad, atol=1e-6), name
        assert torch.allclose(p, before[name] - 0.1 * q.grad,
                              atol=1e-6), name


def test_sandwich_step_touches_the_widest_and_narrowest_slices():
    model = tiny_detector().train()
    members = [s for _, s in model.sandwich()]
    sampled_rows = {s.stats for s in members}
    conv = model.backbone.layers[3][0].conv_pw  # stage4: 16 .. 32 wide
    bn = model.backbone.layers[3][0].bn2
    running_mean = bn.running_mean.clone()
    optim_wrapper = sgd(model)
    spy = StepSpy(optim_wrapper)
    model.train_step(tiny_batch(), optim_wrapper)
    grad = spy.grads[0][conv.weight]
    # the narrowest slice (every member) and the widest (largest only)
    assert grad[:16].abs().sum() > 0
    assert grad[24:].abs().sum() > 0
    # every sampled width updated its own BN statistics row, no other did
    changed = {row for row in range(bn.num_subnets)
               if not torch.equal(bn.running_mean[row], running_mean[row])}
    assert changed == sampled_rows


def test_sandwich_step_under_the_ds_ddp_wrapper_matches_plain(tmp_path):
    model = tiny_detector().train()
    plain = copy.deepcopy(model)
    plain.train_step(tiny_batch(), sgd(plain))
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg',
                            rank=0, world_size=1)
    try:
        ddp = DSDistributedDataParallel(module=model,
                                        find_unused_parameters=True)
        ran = _ran_specs(model)
        optim_wrapper = sgd(model)
        spy = StepSpy(optim_wrapper)
        ddp.train_step(tiny_batch(), optim_wrapper)
    finally:
        dist.destroy_process_group()
    assert len(ran) == 3 and spy.steps == 1
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_subnet_context_selects_the_test_subnet():
    model = tiny_detector().eval()
    batch = model.data_preprocessor(tiny_batch(), False)
    widths = []
    hook = model.backbone.register_forward_hook(
        lambda m, i, out: widths.append([o.shape[1] for o in out]))
    with torch.no_grad():
        model.predict(batch['inputs'], batch['data_samples'])
        with model.subnet('smallest') as spec:
            assert model.active_subnet is spec
            results = model.predict(batch['inputs'], batch['data_samples'])
        model.predict(batch['inputs'], batch['data_samples'])
    hook.remove()
    assert widths == [[24, 32], [12, 16], [24, 32]]
    assert all('pred_instances' in r for r in results)


# --- configuration errors -------------------------------------------------
def test_out_indices_not_matching_the_necks_in_channels_names_both_fields():
    cfg = tiny_detector_cfg()
    cfg['backbone']['out_indices'] = (1, 3)  # 16 and 32 wide
    with pytest.raises(ValueError) as e:
        MODELS.build(cfg)
    message = str(e.value)
    assert 'model.neck.in_channels=[24, 32]' in message
    assert 'model.backbone.out_indices=(1, 3)' in message
    assert '(16, 32)' in message


def test_a_plain_backbone_is_refused():
    cfg = tiny_detector_cfg(backbone=dict(
        type='ResNet', depth=18, out_indices=(2, 3)))
    cfg['neck']['in_channels'] = [256, 512]
    with pytest.raises(ValueError, match='not a DS backbone'):
        MODELS.build(cfg)


# --- weights-only Pretrained init -----------------------------------------
def _classifier_checkpoint(path, backbone, **extra):
    """What mmengine saves for a DS classifier: the state dict under its
    prefixes and a meta with numpy and HistoryBuffer objects."""
    state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    state['head.fc.weight'] = torch.zeros(10, 32)
    log = HistoryBuffer()
    log.update(1.0)
    torch.save(dict(state_dict=state, meta=dict(seed=np.int64(0), log=log),
                    **extra), path)


def test_pretrained_backbone_loads_through_the_weights_only_loader(tmp_path):
    ckpt = str(tmp_path / 'stage1.pth')
    source = tiny_detector().backbone
    for p in source.parameters():
        nn.init.normal_(p)
    _classifier_checkpoint(ckpt, source)
    cfg = tiny_detector_cfg()
    cfg['backbone']['init_cfg'] = dict(type='Pretrained', checkpoint=ckpt,
                                       prefix='backbone.')
    model = MODELS.build(cfg)
    model.init_weights()
    for (name, p), q in zip(model.backbone.state_dict().items(),
                            source.state_dict().values()):
        assert torch.equal(p, q), name


def test_pretrained_init_refuses_what_weights_only_loading_refuses(
        tmp_path):
    ckpt = str(tmp_path / 'evil.pth')
    _classifier_checkpoint(ckpt, tiny_detector().backbone,
                           extra=nn.Identity())  # a pickled module: code
    cfg = tiny_detector_cfg()
    cfg['backbone']['init_cfg'] = dict(type='Pretrained', checkpoint=ckpt,
                                       prefix='backbone.')
    with pytest.raises(pickle.UnpicklingError, match='init_cfg.checkpoint'):
        MODELS.build(cfg).init_weights()


def test_pretrained_prefix_matching_nothing_is_an_error(tmp_path):
    ckpt = str(tmp_path / 'stage1.pth')
    _classifier_checkpoint(ckpt, tiny_detector().backbone)
    cfg = tiny_detector_cfg()
    cfg['backbone']['init_cfg'] = dict(type='Pretrained', checkpoint=ckpt,
                                       prefix='architecture.')
    with pytest.raises(ValueError, match="prefix='architecture.' matches"):
        MODELS.build(cfg).init_weights()


# --- mmdet's own VOC configs, backbone swapped ------------------------------
@pytest.fixture(scope='module')
def digits_voc(tmp_path_factory) -> str:
    """``data_root`` of a digits-VOC set of 2 trainval and 2 test images."""
    from dsnet_mm.datasets import write_digits_voc
    root = write_digits_voc(str(tmp_path_factory.mktemp('data')),
                            max_images=2)
    return osp.join(root, 'VOCdevkit') + '/'


def _innermost(dataset_cfg):
    """The VOC2007 dataset inside RepeatDataset / ConcatDataset."""
    while 'dataset' in dataset_cfg or 'datasets' in dataset_cfg:
        dataset_cfg = dataset_cfg.get('dataset') or \
            dataset_cfg['datasets'][0]
    return dataset_cfg


def _digits_loader(loader_cfg, dataset_cfg, data_root, scale=None):
    """The config's dataloader and pipeline, single-process, over the
    digits-VOC set (its own dataset class: the classes are the digits)."""
    dataset_cfg = dataset_cfg.to_dict()
    dataset_cfg.update(type='DigitsVOCDataset', data_root=data_root)
    for t in dataset_cfg['pipeline']:
        if t['type'] == 'Resize' and scale is not None:
            t['scale'] = scale
    loader_cfg = dict(loader_cfg.to_dict(), dataset=dataset_cfg,
                      batch_size=2, num_workers=0, persistent_workers=False)
    return Runner.build_dataloader(loader_cfg, seed=0)


def _train_and_test(model, cfg, train_loader, val_loader) -> None:
    """One sandwich iteration with the config's optimizer, then a test
    forward of the largest and the smallest sub-network."""
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    spy = StepSpy(optim_wrapper)
    log_vars = model.train_step(next(iter(train_loader)), optim_wrapper)
    assert spy.steps == 1 and torch.isfinite(log_vars['loss'])
    members = {'loss_largest', 'loss_smallest'} | {
        f'loss_random{i}' for i in range(model.num_random)}
    assert members <= set(log_vars)
    assert f'loss_random{model.num_random}' not in log_vars
    model.eval()
    batch = next(iter(val_loader))
    for subnet in ('largest', 'smallest'):
        with model.subnet(subnet), torch.no_grad():
            results = model.val_step(batch)
        assert len(results) == 2
        for r in results:
            assert r.pred_instances.bboxes.shape[1] == 4
            assert (r.pred_instances.labels < 10).all()


@pytest.mark.parametrize('config,scale', [(SSD_CFG, None),
                                          (RETINA_CFG, (64, 64))])
def test_mmdet_voc_config_with_ds_backbone_trains_and_tests(
        digits_voc, config, scale):
    """mmdet's ssd300_voc0712 / retinanet_r50_fpn_1x_voc0712 with only the
    backbone (and the widths it implies) swapped: one sandwich iteration
    and a test forward on the digits-VOC data through the configs' own
    pipelines and data preprocessors (10 classes; RetinaNet at 64 px
    instead of 1000x600 to stay fast)."""
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None  # no ImageNet supernet here
    cfg.model.bbox_head.num_classes = 10
    model = MODELS.build(cfg.model)
    _train_and_test(
        model, cfg,
        _digits_loader(cfg.train_dataloader,
                       _innermost(cfg.train_dataloader.dataset), digits_voc,
                       scale),
        _digits_loader(cfg.val_dataloader, cfg.val_dataloader.dataset,
                       digits_voc, scale))


def test_digits_voc_config_trains_and_tests(digits_voc):
    cfg = Config.fromfile(DIGITS_CFG)
    cfg.model.backbone.init_cfg = None  # no digits supernet here
    model = MODELS.build(cfg.model)
    _train_and_test(
        model, cfg,
        _digits_loader(cfg.train_dataloader, cfg.train_dataloader.dataset,
                       digits_voc),
        _digits_loader(cfg.val_dataloader, cfg.val_dataloader.dataset,
                       digits_voc))

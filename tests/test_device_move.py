# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Every model family trains and routes alike after its storage moves.

``.to(device)`` gives every parameter and buffer new storage (mmengine's
``Runner`` moves the model to the GPU after building it); a CPU run cannot
see a fault of state that keeps the old tensors. Here the move is emulated
on the CPU by cloning every tensor (``model._apply(lambda t: t.clone())``,
what a device move does to storage) and by a float64 round trip
(``.double()`` then ``.float()``), and the moved model is compared with an
unmoved twin: the same losses, parameters, EMA teacher and BN statistics
after a few training steps, after a resume from a checkpoint written after
the move, and the same routed inference.
"""
import contextlib
import copy

import pytest
import torch
import torch.distributed as dist
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmpretrain.structures import DataSample

import dsnet_mm  # noqa: F401 (registers the DS modules)
from dsnet_mm.engine import DSDistributedDataParallel
from dsnet_mm.ops import inference_cache
from test_ds_vit import ARCH as VIT_ARCH
from test_ds_vit import LADDER as VIT_LADDER

MBV1_ARCH = dict(stem=(8, 1), stages=[('stage1', 12, 1, 2),
                                      ('stage2', 16, 2, 2),
                                      ('stage3', 24, 1, 1)])
MBV1_SUBNETS = dict(smallest=dict(stem=4, stage1=6, stage2=4, stage3=8),
                    widest=dict(stem=4, stage1=6, stage2=16, stage3=20),
                    num=7)
STEPS = 5


def clone_storage(model):
    """What ``.to(device)`` does to storage: every tensor replaced."""
    return model._apply(lambda t: t.clone())


def float64_round_trip(model):
    return model.double().float()


MOVES = dict(clone=clone_storage, float64=float64_round_trip)


# --- the model families -----------------------------------------------
def _build(cfg, scope='mmpretrain'):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(copy.deepcopy(cfg))
    for m in model.modules():  # statistics a fresh model would not show
        if isinstance(m, dsnet_mm.ops.DSBatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _classifier(backbone, head_channels, kind='DSImageClassifier',
                neck=True, preprocessor='ClsDataPreprocessor', **kwargs):
    return dict(
        type=kind, backbone=backbone,
        neck=dict(type='GlobalAveragePooling') if neck else None,
        head=dict(type='DSLinearClsHead', num_classes=5,
                  in_channels=head_channels),
        data_preprocessor=dict(type=preprocessor, num_classes=5), **kwargs)


MBV1 = dict(type='DSMobileNetV1', arch=MBV1_ARCH, subnets=MBV1_SUBNETS)
MBV1_GATED = dict(MBV1, gate=dict(stage='stage2', window=(1, 4)))
RESNET = dict(type='DSResNet', depth=18, stem='cifar', stem_channels=8,
              base_channels=8)
RESNET_GATED = dict(RESNET, gate=dict(stage='layer3', window=(0, 4)),
                    fixed_ratios=dict(stem=0.5, layer1=0.5, layer2=0.5))
VIT = dict(type='DSViT', arch=VIT_ARCH, img_size=16, patch_size=4,
           subnets=VIT_LADDER)
VIT_GATED = dict(VIT, fixed_blocks=1, gate=dict(block=0, window=(0, 3)))

# name: (config, scope, batch kind)
FAMILIES = {
    'mbv1_ib': (_classifier(MBV1, 24), 'mmpretrain', 'cls'),
    'mbv1_ieb': (_classifier(MBV1, 24, bootstrap='ieb'), 'mmpretrain',
                 'cls'),
    'resnet_ib': (_classifier(RESNET, 64), 'mmpretrain', 'cls'),
    'vit_mvco': (_classifier(
        VIT, 32, neck=False, preprocessor='MultiViewClsDataPreprocessor',
        mvco=dict(mode='view_mean')), 'mmpretrain', 'views'),
    'mbv1_gate': (_classifier(MBV1_GATED, 24, 'DSGateClassifier'),
                  'mmpretrain', 'cls'),
    'resnet_gate': (_classifier(RESNET_GATED, 64, 'DSGateClassifier'),
                    'mmpretrain', 'cls'),
    'vit_gate': (_classifier(VIT_GATED, 32, 'DSGateClassifier',
                             neck=False), 'mmpretrain', 'cls'),
}


def _detector_cfgs():
    from test_ds_detector import tiny_detector_cfg
    from test_ds_detector_sgs import GATE, MARGIN
    gated = tiny_detector_cfg(type='DSSGSDetector', gate_training=MARGIN)
    gated.backbone.gate = GATE
    return {'detector': (tiny_detector_cfg(), 'mmdet', 'det'),
            'gate_detector': (gated, 'mmdet', 'det')}


FAMILIES.update(_detector_cfgs())
GATED = ('mbv1_gate', 'resnet_gate', 'vit_gate', 'gate_detector')


def batch(kind, n=6):
    if kind == 'det':
        from mmdet.testing import demo_mm_inputs
        torch.manual_seed(3)
        return demo_mm_inputs(2, [(3, 64, 64)] * 2, num_items=[2, 3],
                              num_classes=3)
    g = torch.Generator().manual_seed(1)
    size = 16

    def images():
        return [torch.rand(3, size, size, generator=g) * 255 * (i + 1) / n
                for i in range(n)]

    samples = [DataSample().set_gt_label(i % 5) for i in range(n)]
    if kind == 'views':
        return dict(inputs=[images(), images()], data_samples=samples)
    return dict(inputs=images(), data_samples=samples)


def sgd(model):
    return OptimWrapper(torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.05,
        momentum=0.9))


def train(model, kind, optim_wrapper, steps, first=0):
    """``steps`` train steps on fixed batches; the log of each. The global
    generator (Gumbel noise, dropout) is seeded per step, so that twins
    draw alike."""
    logs = []
    model.train()
    for i in range(first, first + steps):
        torch.manual_seed(100 + i)
        log = model.train_step(batch(kind), optim_wrapper)
        logs.append({k: float(torch.as_tensor(v).detach())
                     for k, v in log.items()})
    return logs


def max_state_difference(a, b):
    """The largest absolute difference over the two models' state dicts
    (parameters, buffers, the teacher), which must hold the same keys."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    worst = 0.0
    for k in sa:
        if sa[k].is_floating_point():
            worst = max(worst, float((sa[k].double() - sb[k].double())
                                     .abs().max()))
        else:
            assert torch.equal(sa[k], sb[k]), k
    return worst


def assert_logs_close(a, b):
    assert [x.keys() for x in a] == [y.keys() for y in b]
    for x, y in zip(a, b):
        for k in x:
            assert x[k] == pytest.approx(y[k], rel=1e-5, abs=1e-6), k


def teacher_state(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.startswith('teacher.module.')}


# --- training after a move -------------------------------------------
@pytest.mark.parametrize('move', sorted(MOVES))
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_a_moved_model_trains_as_its_unmoved_twin(family, move):
    cfg, scope, kind = FAMILIES[family]
    twin = _build(cfg, scope)
    moved = MOVES[move](_build(cfg, scope))
    logs = train(twin, kind, sgd(twin), STEPS)
    moved_logs = train(moved, kind, sgd(moved), STEPS)
    assert_logs_close(moved_logs, logs)
    assert max_state_difference(moved, twin) < 1e-6


@pytest.mark.parametrize('family', ['mbv1_ib', 'mbv1_ieb'])
def test_the_teacher_moves_after_a_storage_move(family):
    """The EMA teacher after five steps equals the unmoved twin's, and it
    did move (a teacher writing into the tensors it had before the move
    would keep its initial weights)."""
    cfg, scope, kind = FAMILIES[family]
    twin = _build(cfg, scope)
    moved = clone_storage(_build(cfg, scope))
    start = teacher_state(moved)
    train(twin, kind, sgd(twin), STEPS)
    train(moved, kind, sgd(moved), STEPS)
    after, expected = teacher_state(moved), teacher_state(twin)
    key = 'teacher.module.backbone.stem.conv.weight'
    # momentum 0.003: five updates move it by about 1e-3 (0 if stuck)
    assert (after[key] - start[key]).abs().max() > 1e-4
    for k in expected:
        assert (after[k] - expected[k]).abs().max() < 1e-6, k
    # the average is written into the tensors the teacher runs with
    live = moved.teacher.module.state_dict()
    moved.teacher.update_parameters(moved._student())
    assert all(moved.teacher.avg_parameters[k].data_ptr() ==
               live[k].data_ptr() for k in live)


@pytest.mark.parametrize('order', ['move_then_load', 'load_then_move'])
@pytest.mark.parametrize('family', ['mbv1_ib', 'mbv1_ieb', 'gate_detector'])
def test_a_resume_after_a_move_continues_the_same_run(tmp_path, family,
                                                      order):
    """Three steps after a move, a checkpoint, a fresh model resumed from
    it (moved before or after loading, as mmengine's Runner moves before
    it resumes) and two more steps: the same as five unmoved steps."""
    cfg, scope, kind = FAMILIES[family]
    twin = _build(cfg, scope)
    twin_logs = train(twin, kind, sgd(twin), STEPS)

    first = clone_storage(_build(cfg, scope))
    optim_wrapper = sgd(first)
    logs = train(first, kind, optim_wrapper, 3)
    path = tmp_path / 'iter_3.pth'
    torch.save(dict(state_dict=first.state_dict(),
                    optimizer=optim_wrapper.state_dict()), path)

    resumed = _build(cfg, scope)
    if order == 'move_then_load':
        clone_storage(resumed)
    ckpt = torch.load(path, weights_only=True)
    resumed.load_state_dict(ckpt['state_dict'])
    if order == 'load_then_move':
        clone_storage(resumed)
    optim_wrapper = sgd(resumed)
    optim_wrapper.load_state_dict(ckpt['optimizer'])
    logs += train(resumed, kind, optim_wrapper, 2, first=3)
    assert_logs_close(logs, twin_logs)
    assert max_state_difference(resumed, twin) < 1e-6


def test_a_deep_copy_trains_as_the_original():
    cfg, scope, kind = FAMILIES['mbv1_ib']
    twin = _build(cfg, scope)
    copied = copy.deepcopy(_build(cfg, scope))
    train(twin, kind, sgd(twin), STEPS)
    train(copied, kind, sgd(copied), STEPS)
    assert max_state_difference(copied, twin) < 1e-6


def test_the_teacher_moves_under_ddp_after_a_move(tmp_path):
    """Under the DS DDP wrapper (built, as mmengine's Runner does, after
    the model was moved) the teacher follows the student as without it."""
    cfg, scope, kind = FAMILIES['mbv1_ib']
    twin = _build(cfg, scope)
    train(twin, kind, sgd(twin), 3)
    model = clone_storage(_build(cfg, scope))
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg',
                            rank=0, world_size=1)
    try:
        ddp = DSDistributedDataParallel(module=model,
                                        find_unused_parameters=True)
        optim_wrapper = sgd(model)
        model.train()
        for i in range(3):
            torch.manual_seed(100 + i)
            ddp.train_step(batch(kind), optim_wrapper)
    finally:
        dist.destroy_process_group()
    assert max_state_difference(model, twin) < 1e-6


def test_a_teacher_left_behind_by_a_partial_move_is_refused():
    cfg, scope, kind = FAMILIES['mbv1_ib']
    model = _build(cfg, scope)
    model.backbone.double()  # a part moved on its own
    model.head.double()
    with pytest.raises(RuntimeError, match=r'move\s+the whole model'):
        model.train_step(batch(kind), sgd(model))


# --- routed inference after a move -----------------------------------
def _routed(model, kind):
    """(outputs, window positions) of the gate's routing on a batch, by
    bucket and by mask."""
    data = model.data_preprocessor(batch(kind), False)
    with torch.no_grad():
        results = []
        for mode in ('bucket', 'mask'):
            out, _, choice = model.forward_dynamic(data['inputs'], mode)
            out = out if isinstance(out, torch.Tensor) else out[-1]
            results.append((out.clone(), choice.clone()))
    return results


@pytest.mark.parametrize('move', sorted(MOVES))
@pytest.mark.parametrize('family', GATED)
def test_routed_inference_is_unchanged_by_a_move(family, move):
    """Routed outputs and choices after a move, in and out of the
    inference cache (whose entries and static networks are rebuilt from
    the moved tensors), with a fitted cost penalty that keeps its float64
    value."""
    cfg, scope, kind = FAMILIES[family]
    model = _build(cfg, scope).eval()
    penalty = 0.1234567890123456789
    model.cost_penalty.fill_(penalty)
    before = _routed(model, kind)
    for cached in (False, True):
        cache = inference_cache(model) if cached \
            else contextlib.nullcontext()
        with cache:
            in_cache = _routed(model, kind)
            MOVES[move](model)
            after = _routed(model, kind)
        assert model.cost_penalty.dtype == torch.float64
        assert float(model.cost_penalty) == penalty
        for (out, choice), (out0, choice0) in zip(after, before):
            assert torch.equal(choice, choice0)
            torch.testing.assert_close(out, out0, atol=1e-5, rtol=1e-5)
        for (out, choice), (out0, choice0) in zip(in_cache, before):
            assert torch.equal(choice, choice0)
            torch.testing.assert_close(out, out0, atol=1e-5, rtol=1e-5)


def test_a_move_during_a_cached_call_is_refused():
    cfg, scope, kind = FAMILIES['mbv1_gate']
    model = _build(cfg, scope).eval()
    data = model.data_preprocessor(batch(kind), False)
    with inference_cache(model) as block, torch.no_grad():
        with block.checked(), pytest.raises(RuntimeError,
                                            match='between calls'):
            clone_storage(model)
        model.forward_dynamic(data['inputs'])  # still usable


def test_a_half_conversion_keeps_the_penalty_exact():
    cfg, scope, _ = FAMILIES['mbv1_gate']
    model = _build(cfg, scope)
    model.cost_penalty.fill_(0.1234567890123456789)
    model.half()
    assert model.cost_penalty.dtype == torch.float64
    assert float(model.cost_penalty) == 0.1234567890123456789

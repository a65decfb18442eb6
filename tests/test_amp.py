# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Mixed precision: the CPU bfloat16 optimizer wrapper, float32 losses and
soft targets under autocast, how far a bfloat16 step or routed prediction is
from the float32 one (Stage I, Stage II, the detector), and
``tools/train.py --amp``.

Tolerances. bfloat16 keeps 8 significant bits (about 3 decimal digits):
each rounding of an activation or a weight is off by up to 2**-9 (0.2%) of
the value, and the layers' errors add up, so a tiny network's loss moves by
a few tenths of a percent from float32 (measured: at most 0.56%, quoted at
:data:`LOSS_RTOL`). The bound is five times that. Stage II's SGS targets
and Gumbel routing must be the float32 step's exactly (its share of easy
targets and its mean MAdds), and that losses and soft targets are computed
in float32 is checked exactly, on bfloat16 logits. The gate's decision and
the predicted class flip only for images whose two best logits are within
the rounding error of each other.
"""
import argparse
import copy
import importlib.util
import os
import os.path as osp
import subprocess
import sys
from collections import Counter
from typing import Callable, Dict, List, Tuple

import pytest
import torch
import torch.nn as nn
from mmengine.device import get_device
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmpretrain.structures import DataSample

import dsnet_mm  # noqa: F401 (registers the DS modules)
from conftest import ROOT, randomize_bn
from dsnet_mm.engine import CPUAmpOptimWrapper, amp_optim_wrapper
from dsnet_mm.engine.amp import AMP_DEVICES
from dsnet_mm.models.losses import SoftTargetCrossEntropy
from dsnet_mm.models.routing import route_weights, sgs_cross_entropy

# Stage I's tiny DS-MobileNetV1 (tests/test_classifier.py) and Stage II's
# gated one (tests/test_gate.py)
MBNET = dict(stem=(8, 1), stages=[('stage1', 12, 1, 2), ('stage2', 16, 1, 2)])
MBNET_SUBNETS = dict(smallest=dict(stem=4, stage1=6, stage2=4),
                     widest=dict(stem=4, stage1=6, stage2=16), num=7)
GATED = dict(stem=(8, 1), stages=[('stage1', 12, 1, 2), ('stage2', 16, 2, 2),
                                  ('stage3', 24, 1, 1)])
GATED_SUBNETS = dict(smallest=dict(stem=4, stage1=6, stage2=4, stage3=8),
                     widest=dict(stem=4, stage1=6, stage2=16, stage3=20),
                     num=7)
# DS-ViT of tests/test_ds_vit.py
VIT = dict(embed_dims=32, num_layers=3, num_heads=4, feedforward_channels=64)
VIT_SUBNETS = dict(smallest=dict(embed=16, heads=2, mlp=16),
                   widest=dict(embed=32, heads=4, mlp=64), num=3)

# largest relative differences measured: Stage I 7.7e-4 (IB, DS-MobileNetV1),
# 1.3e-3 (IEB, DS-ResNet), 2.3e-3 (MvCo, DS-ViT); Stage II 5.6e-3 (the SGS
# loss); the detector 1.5e-3
LOSS_RTOL = 0.03
# share of images routed / classified alike, at least; measured: 1.0 and
# 0.98 (classifier), 0.94 and 1.0 (detector, its budget-fitted penalty
# leaving a few images within a rounding of two sub-networks)
AGREEMENT = 0.85


def build_in(scope: str, cfg: dict) -> nn.Module:
    """A model built from ``cfg`` in ``scope``'s registry, seeded."""
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(cfg)


def classifier(backbone: dict, **kwargs) -> nn.Module:
    width = 16 if backbone['type'] == 'DSMobileNetV1' else 64
    return build_in('mmpretrain', dict(
        type='DSImageClassifier', backbone=backbone,
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=width),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=5),
        **kwargs))


def vit_classifier(**kwargs) -> nn.Module:
    return build_in('mmpretrain', dict(
        type='DSImageClassifier',
        backbone=dict(type='DSViT', arch=VIT, img_size=16, patch_size=4,
                      subnets=VIT_SUBNETS),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=32),
        data_preprocessor=dict(type='MultiViewClsDataPreprocessor',
                               num_classes=5),
        **kwargs))


def gate_classifier(**kwargs) -> nn.Module:
    """The tiny gated DS-MobileNetV1 of tests/test_gate.py, its BN
    statistics and scales random."""
    model = build_in('mmpretrain', dict(
        type='DSGateClassifier',
        backbone=dict(type='DSMobileNetV1', arch=GATED,
                      subnets=GATED_SUBNETS,
                      gate=dict(stage='stage2', window=(1, 4))),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=24),
        data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=5),
        **kwargs))
    return randomize_bn(model)


STAGE1 = {
    'IB, DS-MobileNetV1': lambda: classifier(
        dict(type='DSMobileNetV1', arch=MBNET, subnets=MBNET_SUBNETS),
        bootstrap='ib'),
    'IEB, DS-ResNet': lambda: classifier(
        dict(type='DSResNet', depth=18, stem='cifar', stem_channels=8,
             base_channels=8), bootstrap='ieb'),
    'MvCo, DS-ViT': lambda: vit_classifier(
        mvco=dict(mode='largest_consistency'), bootstrap='ieb'),
}


def images(n: int, size: int, seed: int = 1) -> List[torch.Tensor]:
    """``n`` images of varied brightness and contrast (so that a gate routes
    them apart)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) * 255 * (i + 1) / n
            for i in range(n)]


def cls_batch(n: int = 16, size: int = 12) -> dict:
    return dict(inputs=images(n, size),
                data_samples=[DataSample().set_gt_label(i % 5)
                              for i in range(n)])


def two_view_batch(n: int = 8) -> dict:
    return dict(inputs=[images(n, 16, seed) for seed in (1, 2)],
                data_samples=[DataSample().set_gt_label(i % 5)
                              for i in range(n)])


class Recorder:
    """The dtypes of the losses a wrapper back-propagates and of the
    outputs of ``module``."""

    def __init__(self, wrapper: OptimWrapper, module: nn.Module) -> None:
        self.losses: List[torch.dtype] = []
        self.outputs: List[torch.dtype] = []
        backward = wrapper.backward

        def spy(loss, **kwargs):
            self.losses.append(loss.dtype)
            return backward(loss, **kwargs)

        wrapper.backward = spy
        module.register_forward_hook(
            lambda m, args, out: self.outputs.extend(
                o.dtype for o in (out if isinstance(out, (tuple, list))
                                  else [out])))


def step_both(build: Callable[[], nn.Module], batch: Callable[[], dict],
              watch: Callable[[nn.Module], nn.Module]
              ) -> Tuple[Dict[str, dict], Dict[str, Recorder]]:
    """One ``train_step`` of two copies of the same model (``build`` seeds)
    on the same batch: with ``OptimWrapper`` (float32) and with
    :class:`CPUAmpOptimWrapper` (bfloat16 autocast). Returns the log
    variables and a :class:`Recorder` (of ``watch(model)``) of each."""
    logs, records = {}, {}
    for name, kind in (('fp32', OptimWrapper),
                       ('bf16', CPUAmpOptimWrapper)):
        model = build()
        model.train()
        wrapper = kind(optimizer=torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=0.01))
        records[name] = Recorder(wrapper, watch(model))
        torch.manual_seed(1)  # dropout and the Gumbel noise alike
        logs[name] = model.train_step(batch(), wrapper)
    return logs, records


def relative_differences(logs: Dict[str, dict]) -> Dict[str, float]:
    """``|bf16 - fp32| / |fp32|`` of every loss of the log."""
    return {
        k: abs(float(logs['bf16'][k]) - float(v)) / max(abs(float(v)), 1e-6)
        for k, v in logs['fp32'].items() if k.startswith('loss')
    }


def check_step(logs, records, keys) -> None:
    """Same losses within :data:`LOSS_RTOL`, each float32; the float32
    run's network ran in float32 and the other's in bfloat16."""
    assert keys <= set(logs['fp32']) and set(logs['fp32']) == set(
        logs['bf16'])
    diff = relative_differences(logs)
    assert max(diff.values()) < LOSS_RTOL, diff
    for name in ('fp32', 'bf16'):
        assert records[name].losses and set(
            records[name].losses) == {torch.float32}
        assert all(v.dtype == torch.float32 for k, v in logs[name].items()
                   if k.startswith('loss'))
    assert set(records['fp32'].outputs) == {torch.float32}
    assert set(records['bf16'].outputs) == {torch.bfloat16}


# --- the wrapper -------------------------------------------------------------
def test_cpu_wrapper_autocasts_to_bfloat16_within_its_context_only():
    model = nn.Linear(4, 3)
    wrapper = CPUAmpOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    x = torch.randn(2, 4)
    with wrapper.optim_context(model):
        assert torch.is_autocast_enabled('cpu')
        assert torch.get_autocast_dtype('cpu') == torch.bfloat16
        out = model(x)
        wrapper.backward(out.float().square().mean())
    assert out.dtype == torch.bfloat16
    assert not torch.is_autocast_enabled('cpu')
    # float32 weights and gradients, no loss scaling
    before = model.weight.detach().clone()
    grad = model.weight.grad.clone()
    wrapper.step()
    assert model.weight.dtype == grad.dtype == torch.float32
    torch.testing.assert_close(model.weight, before - 0.1 * grad)
    assert model(x).dtype == torch.float32


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet'])
def test_cpu_wrapper_is_built_from_a_config_in_either_scope(scope):
    model = nn.Linear(4, 3)
    with DefaultScope.overwrite_default_scope(scope):
        wrapper = build_optim_wrapper(model, dict(
            type='CPUAmpOptimWrapper', optimizer=dict(type='SGD', lr=0.1),
            clip_grad=dict(max_norm=1.0)))
    assert type(wrapper) is CPUAmpOptimWrapper
    assert wrapper.clip_grad_kwargs == dict(max_norm=1.0)


def test_cpu_wrapper_refuses_another_dtype():
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"optim_wrapper\.dtype='float16' "
                       r"is not one of \('bfloat16',\)"):
        CPUAmpOptimWrapper(
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            dtype='float16')


# --- --amp's choice of wrapper -----------------------------------------------
CFG = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1),
           paramwise_cfg=dict(norm_decay_mult=0.0))


def test_amp_on_a_gpu_is_mmengines_wrapper_with_dynamic_loss_scaling():
    cfg = amp_optim_wrapper(CFG, device='cuda')
    assert cfg == dict(CFG, type='AmpOptimWrapper', loss_scale='dynamic')
    assert CFG['type'] == 'OptimWrapper'  # the given config is untouched
    kept = amp_optim_wrapper(dict(CFG, loss_scale=512.), device='cuda')
    assert kept['loss_scale'] == 512.


def test_amp_on_the_cpu_is_the_bfloat16_wrapper_with_the_other_keys():
    cfg = amp_optim_wrapper(CFG, device='cpu')
    assert cfg == dict(CFG, type='CPUAmpOptimWrapper')


@pytest.mark.parametrize('device, cfg, match', [
    ('mps', CFG, r"--amp .* this machine trains on 'mps', which has "
     r'neither: run without --amp'),
    ('cpu', dict(CFG, loss_scale='dynamic'),
     r'--amp on the CPU .* takes no optim_wrapper\.loss_scale .* remove it '
     r'from the config, run without --amp, or train on a GPU'),
    ('cpu', dict(CFG, use_fsdp=True), r'optim_wrapper\.use_fsdp'),
    ('cpu', dict(CFG, dtype='float16'),
     r"--amp on the CPU autocasts to 'bfloat16' only, got "
     r"optim_wrapper\.dtype='float16'"),
])
def test_amp_where_it_cannot_run_names_the_flag_and_what_to_do(
        device, cfg, match):
    with pytest.raises(ValueError, match=match):
        amp_optim_wrapper(cfg, device=device)


# --- float32 losses and targets ----------------------------------------------
def test_losses_and_gumbel_weights_are_float32_from_bfloat16_logits():
    torch.manual_seed(0)
    logits = torch.randn(6, 5)
    target = torch.softmax(torch.randn(6, 5), -1)
    labels = torch.tensor([0, 1, 2, 3, 4, -100])
    low = logits.bfloat16()
    soft = SoftTargetCrossEntropy()
    assert soft(low, target.bfloat16()).dtype == torch.float32
    torch.testing.assert_close(soft(low, target),
                               soft(low.float(), target))
    assert sgs_cross_entropy(low, labels, 0.1).dtype == torch.float32
    assert route_weights(low).dtype == torch.float32
    head = build_in('mmpretrain', dict(
        type='DSLinearClsHead', num_classes=5, in_channels=8,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1)))
    samples = [DataSample().set_gt_label(i % 5) for i in range(6)]
    loss = head._get_loss(low, samples)['loss']
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss,
                               head._get_loss(low.float(), samples)['loss'])


# --- Stage I, Stage II: one step in bfloat16 against float32 -----------------
@pytest.mark.parametrize('name', sorted(STAGE1))
def test_stage1_step_under_bfloat16_matches_float32(name):
    mvco = name.startswith('MvCo')
    logs, records = step_both(
        STAGE1[name], two_view_batch if mvco else cls_batch,
        lambda model: model.head.fc)
    keys = {'loss_largest', 'loss_random0', 'loss_random1', 'loss_smallest'}
    check_step(logs, records, keys | ({'loss_consistency'} if mvco else set()))


@pytest.mark.parametrize('options', [
    dict(),
    # the reference code's: SGS loss on the soft Gumbel sample, channel
    # masks before the activations
    dict(gate_loss_input='gumbel_probs', mask_position='before_act'),
])
def test_stage2_sgs_step_under_bfloat16_matches_float32(options):
    # a MAdds unit that makes the complexity term count
    logs, records = step_both(
        lambda: gate_classifier(madds_unit=1e4, **options),
        lambda: cls_batch(32), lambda model: model.head.fc)
    check_step(logs, records, {'loss_task', 'loss_gate', 'loss_complexity'})
    # the same routing: the mean MAdds and the SGS targets agree
    assert float(logs['bf16']['mean_madds']) == pytest.approx(
        float(logs['fp32']['mean_madds']), rel=1e-6)
    assert float(logs['bf16']['easy_ratio']) == float(
        logs['fp32']['easy_ratio'])


# --- routed inference --------------------------------------------------------
def agreement(first: List, second: List) -> float:
    return sum(a == b for a, b in zip(first, second)) / len(first)


def spread_routing(model: nn.Module, data: dict) -> None:
    """Fit the MAdds budget halfway between the window's narrowest and
    widest on ``data``, so that the gate routes the images apart (its random
    slimming head sends nearly all of them to one sub-network)."""
    inputs = model.data_preprocessor(copy.deepcopy(data), False)['inputs']
    with torch.no_grad():
        logits = model._pre_gate(inputs)[1]
    low = float(model.relative_costs(inputs.shape[1:])[0])
    model.fit_budget(logits, inputs.shape[1:], (low + 1) / 2)


def routed_in_both(model, data):
    """(float32 results, bfloat16 autocast results, the routed sub-network
    of each image in each) of ``test_step`` on ``data``, with the budget
    fitted so that the gate routes the images apart."""
    spread_routing(model, data)
    with torch.no_grad():
        exact = model.test_step(copy.deepcopy(data))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model.test_step(copy.deepcopy(data))
    return exact, low, [[s.routed_subnet for s in r] for r in (exact, low)]


@pytest.mark.parametrize('mode', ['bucket', 'mask'])
def test_routed_predictions_under_bfloat16_agree_with_float32(mode):
    model = gate_classifier(routing_mode=mode).eval()
    exact, low, routes = routed_in_both(model, cls_batch(64))
    labels = [[int(s.pred_label) for s in r] for r in (exact, low)]
    assert min(Counter(routes[0]).values()) >= 8  # routed apart
    assert agreement(*routes) >= AGREEMENT
    assert agreement(*labels) >= AGREEMENT


# --- the detector ------------------------------------------------------------
def detector_cfg(**kwargs):
    from test_ds_detector import tiny_detector_cfg
    return tiny_detector_cfg(**kwargs)


def det_batch(n: int = 4) -> dict:
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(n, [(3, 64, 64)] * n, num_items=[2] * n,
                          num_classes=3)


def test_detector_sandwich_step_under_bfloat16_matches_float32():
    logs, records = step_both(
        lambda: randomize_bn(build_in('mmdet', detector_cfg())), det_batch,
        lambda model: model.neck)
    check_step(logs, records, {'loss_cls', 'loss_bbox', 'loss_largest',
                               'loss_smallest'})


def test_routed_detections_under_bfloat16_agree_with_float32():
    cfg = detector_cfg(type='DSGateDetector')
    cfg.backbone.gate = dict(stage='stage3', window=(0, 3))
    model = randomize_bn(build_in('mmdet', cfg)).eval()
    exact, low, routes = routed_in_both(model, det_batch(32))
    assert min(Counter(routes[0]).values()) >= 8  # routed apart
    assert agreement(*routes) >= AGREEMENT
    top = [[int(s.pred_instances.labels[s.pred_instances.scores.argmax()])
            for s in r] for r in (exact, low)]
    assert agreement(*top) >= AGREEMENT
    assert all(s.pred_instances.scores.dtype == torch.float32 for s in low)


# --- tools/train.py --amp ----------------------------------------------------
def load_train_tool():
    spec = importlib.util.spec_from_file_location(
        'tool_train', osp.join(ROOT, 'tools', 'train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tool_args(config: str, work_dir: str, **kwargs) -> argparse.Namespace:
    args = dict(config=config, work_dir=work_dir, resume=None, amp=True,
                no_validate=False, auto_scale_lr=False, launcher='none')
    return argparse.Namespace(**dict(args, **kwargs))


def test_train_tool_amp_trains_the_digits_demo_in_mixed_precision(
        tmp_path, digits_root):
    """Two iterations of configs/ds_mbnet_digits.py with ``--amp``: the
    runner's wrapper is the one for this machine's device (bfloat16 on the
    CPU), the network runs in that precision, and the per-sub-network
    evaluation runs under autocast too (``val_cfg.fp16``)."""
    tool = load_train_tool()
    config = osp.join(ROOT, 'configs', 'ds_mbnet_digits.py')
    data = f'{digits_root}/digits/cifar'
    cfg = tool.load_config(config, {
        'train_dataloader.dataset.data_root': data,
        'val_dataloader.dataset.data_root': data,
        'train_dataloader.dataset.indices': 128,
        'val_dataloader.dataset.indices': 32,
        'train_cfg.max_epochs': 1, 'val_cfg.fp16': True,
        'val_cfg.subnets': ['smallest', 'largest'],
        'val_cfg.calibrate.num_batches': 1,
    })
    cfg = tool.merge_args(cfg, tool_args(config, str(tmp_path)))
    gpu = get_device() in AMP_DEVICES
    assert cfg.optim_wrapper.type == ('AmpOptimWrapper' if gpu
                                      else 'CPUAmpOptimWrapper')
    assert cfg.optim_wrapper.optimizer.nesterov  # the config's other keys
    runner = Runner.from_cfg(cfg)
    device, low = ('cuda', torch.float16) if gpu else ('cpu', torch.bfloat16)
    calls = []  # (training, under autocast, logits dtype)
    runner.model.head.fc.register_forward_hook(
        lambda m, args, out: calls.append(
            (m.training, torch.is_autocast_enabled(device), out.dtype)))
    runner.train()
    assert type(runner.optim_wrapper).__name__ == cfg.optim_wrapper.type
    assert runner.iter == 2
    assert {(a, d) for training, a, d in calls if training} == {(True, low)}
    # evaluation under autocast too (the MAdds counter runs without)
    assert (True, low) in {(a, d) for training, a, d in calls
                           if not training}
    scalars = runner.message_hub.log_scalars
    assert torch.isfinite(torch.tensor(scalars['train/loss'].current()))
    assert 'val/largest/accuracy/top1' in scalars


@pytest.mark.parametrize('device, options, match', [
    ('mps', {}, r"trains on 'mps', which has neither: run without --amp"),
    ('cpu', {'optim_wrapper.loss_scale': 512.},
     r'takes no optim_wrapper\.loss_scale \(got 512\.0'),
])
def test_train_tool_amp_where_it_cannot_run_stops_with_advice(
        monkeypatch, tmp_path, device, options, match):
    """The tool's own check of the device the runner would train on."""
    import dsnet_mm.engine.amp as amp
    monkeypatch.setattr(amp, 'get_device', lambda: device)
    tool = load_train_tool()
    config = osp.join(ROOT, 'configs', 'ds_mbnet_digits.py')
    cfg = tool.load_config(config, options)
    with pytest.raises(SystemExit, match=match):
        tool.merge_args(cfg, tool_args(config, str(tmp_path)))
    cfg = tool.load_config(config, options)
    cfg = tool.merge_args(cfg, tool_args(config, str(tmp_path), amp=False))
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'


def test_train_tool_amp_error_reaches_the_command_line_without_traceback(
        tmp_path):
    """On a CPU (CUDA hidden), a config with a GPU-only key: the tool exits
    with the advice before building anything."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', 'configs/ds_mbnet_digits.py',
         '--amp', '--work-dir', str(tmp_path), '--cfg-options',
         'optim_wrapper.loss_scale=512.0'],
        cwd=ROOT, env=env, text=True, capture_output=True, timeout=600)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        '--amp on the CPU trains with bfloat16 autocast, which takes no '
        "optim_wrapper.loss_scale (got 512.0; it is for mmengine's "
        'AmpOptimWrapper on a GPU): remove it from the config, run without '
        '--amp, or train on a GPU')

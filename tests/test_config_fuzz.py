# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Config fuzzing: every key of every DS component, fed wrong types and
out-of-range values, stops with a ``ValueError`` or ``TypeError`` whose
message names the key (no ``AttributeError``, ``IndexError`` or
``KeyError`` from deep inside, no silent acceptance).

``CASES`` is the table: component, key (dotted for a key inside a dict
argument), a builder taking the keyword arguments to override, and the bad
values. ``test_every_key_is_fuzzed`` checks that the table covers every
constructor argument and every typed command-line option of the tools.
"""
import argparse
import importlib.util
import inspect
import json
import math
import os.path as osp
import sys
from typing import Callable, Dict, List, NamedTuple, Sequence

import pytest
from mmengine.registry import DefaultScope, init_default_scope

from dsnet_mm.engine import SubnetValLoop
from dsnet_mm.engine.hooks import DDPConsistencyHook
from dsnet_mm.models.backbones import DSMobileNetV1, DSResNet, DSViT
from dsnet_mm.models.classifiers import DSGateClassifier, DSImageClassifier
from dsnet_mm.models.detectors import (DSGateDetector, DSSGSDetector,
                                       DSSingleStageDetector,
                                       DSTwoStageDetector)
from dsnet_mm.models.gates import DSGate
from dsnet_mm.search.runner import DEFAULTS, search_options

init_default_scope('mmpretrain')
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# --- bad values by the kind of value a key expects ---------------------------
NOT_INT = ('4', 4.5, [4], None, {}, True)
NOT_FLOAT = ('0.5', [0.5], None, {}, True, math.nan, math.inf)
NOT_BOOL = ('False', 1, None, [])
SEARCH_NOT_INT = ('4', 4.5, [4], {}, True)
NOT_DICT = ('x', 1, [])
NOT_CHOICE = ('nope', 1, None, [])


# --- small components, each built with the overrides -------------------------
MB_ARCH = dict(stem=(4, 1), stages=[('stage1', 8, 1, 1),
                                    ('stage2', 12, 1, 2)])
MB_SUBNETS = [dict(stem=4, stage1=8, stage2=w) for w in (4, 8, 12)]
MB_GATE = dict(stage='stage2', window=(0, 3))
VIT_ARCH = dict(embed_dims=16, num_layers=3, num_heads=2,
                feedforward_channels=32)
VIT_LADDER = dict(smallest=dict(embed=8, heads=1, mlp=16),
                  widest=dict(embed=16, heads=2, mlp=32), num=2)
VIT_GATE = dict(block=0, window=(0, 2))
RESNET_GATE_FIXED = dict(stem=1.0, layer1=1.0, layer2=1.0)
HEAD = dict(type='DSLinearClsHead', num_classes=3, in_channels=12)


def mbnet_cfg(**kw) -> dict:
    return dict(dict(type='DSMobileNetV1', arch=MB_ARCH,
                     subnets=MB_SUBNETS), **kw)


def build_mbnet(**kw):
    return DSMobileNetV1(**dict(dict(arch=MB_ARCH, subnets=MB_SUBNETS), **kw))


def build_resnet(**kw):
    base = dict(depth=18, stem='cifar', stem_channels=4, base_channels=4,
                se_stage='layer3')
    if 'gate' in kw:
        base.update(fixed_ratios=RESNET_GATE_FIXED)
    return DSResNet(**dict(base, **kw))


def build_vit(**kw):
    base = dict(arch=VIT_ARCH, img_size=8, patch_size=4, subnets=VIT_LADDER)
    if 'gate' in kw:
        base.update(fixed_blocks=1)
    return DSViT(**dict(base, **kw))


def build_gate(**kw):
    return DSGate(**dict(dict(in_channels=8, num_choices=3), **kw))


def build_stage1(**kw):
    return DSImageClassifier(**dict(dict(backbone=mbnet_cfg(), head=HEAD),
                                    **kw))


def build_stage2(**kw):
    return DSGateClassifier(**dict(
        dict(backbone=mbnet_cfg(gate=MB_GATE), head=HEAD), **kw))


DET_HEAD = dict(
    type='RetinaHead', num_classes=3, in_channels=12, stacked_convs=1,
    feat_channels=8,
    anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                          scales_per_octave=1, ratios=[1.0], strides=[2]),
    bbox_coder=dict(type='DeltaXYWHBBoxCoder'),
    loss_cls=dict(type='FocalLoss', use_sigmoid=True),
    loss_bbox=dict(type='L1Loss'))


def build_detector(gated: bool = False, **kw):
    """A DS detector (``DSGateDetector`` with a gated backbone where
    ``gated``): built in mmdet's scope, the backbone found by its
    ``mmpretrain.`` prefix."""
    backbone = mbnet_cfg(type='mmpretrain.DSMobileNetV1', out_indices=(1, ),
                         **(dict(gate=MB_GATE) if gated else {}))
    cls = DSGateDetector if gated else DSSingleStageDetector
    with DefaultScope.overwrite_default_scope('mmdet'):
        return cls(**dict(dict(backbone=backbone, bbox_head=DET_HEAD), **kw))


def build_gate_detector(**kw):
    return build_detector(gated=True, **kw)


SGS_MARGIN = dict(margin=0.5, margin_mode='absolute')


def build_sgs_detector(**kw):
    """``DSSGSDetector``: the gated detector with ``gate_training``."""
    backbone = mbnet_cfg(type='mmpretrain.DSMobileNetV1', out_indices=(1, ),
                         gate=MB_GATE)
    kw = dict(dict(backbone=backbone, bbox_head=DET_HEAD,
                   gate_training=SGS_MARGIN), **kw)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DSSGSDetector(**kw)


def build_two_stage(**kw):
    """The tiny Faster R-CNN of ``test_ds_two_stage`` with the overrides."""
    from test_ds_two_stage import faster_rcnn_cfg
    cfg = dict(faster_rcnn_cfg())
    cfg.pop('type')
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DSTwoStageDetector(**dict(cfg, **kw))


def build_val_loop(**kw):
    # every argument is checked before the runner, dataloader or evaluator
    # is touched
    return SubnetValLoop(None, None, None, **kw)


def build_search(**kw):
    return search_options(None, kw)


class Case(NamedTuple):
    component: str
    key: str  # what the message must name
    build: Callable
    values: Sequence


def cases_of(component: str, build: Callable,
             table: Dict[str, Sequence]) -> List[Case]:
    """One case per top-level key: ``build(key=value)``."""
    return [Case(component, key, build, values)
            for key, values in table.items()]


def inner_case(component: str, key: str, build: Callable, base: dict,
               values: Sequence) -> Case:
    """A case of ``outer.inner``: ``build(outer=dict(base, inner=value))``.
    """
    outer, inner = key.split('.')
    return Case(component, key,
                lambda **kw: build(**{outer: dict(base, **{inner: kw[key]})}),
                values)


GATE_WINDOW = ('x', 2, (0, ), (0, 'x'), (-1, 2), (0, 0), (0, 9), None)


def gate_cases(component: str, build: Callable, gate: dict,
               position: str, positions_bad: Sequence) -> List[Case]:
    """``gate`` itself and each of its keys (``position``: where it sits).
    """
    return [
        Case(component, 'gate', build,
             NOT_DICT + (dict(window=(0, 2)), dict(gate, colour=1))),
        *(inner_case(component, f'gate.{key}', build, gate, values)
          for key, values in ((position, positions_bad),
                              ('window', GATE_WINDOW),
                              ('features', NOT_CHOICE),
                              ('head_init', NOT_CHOICE))),
    ]


WIDTH = NOT_INT + (0, -1)
ARCH_BAD = ('large', 3, None, dict(stem=(4, 1)),
            dict(stem='x', stages=MB_ARCH['stages']),
            dict(stem=(4, 1), stages=[]),
            dict(stem=(4, 1), stages=['stage1']),
            dict(stem=(4, 1), stages=[('stage1', 0, 1, 1)]),
            dict(stem=(4, 1), stages=[(1, 8, 1, 1)]))
SUBNETS_BAD = ('x', 3, [], ['x'], [dict(stem=4, stage1=8, stage2='x')],
               [dict(stem=4, stage1=8, stage2=99)],
               dict(smallest=1, widest=1, num=2), dict(num=2))
OUT_INDICES = ('x', 1.5, [None], [9], [-9], [], {})

CASES: List[Case] = [
    *cases_of('DSMobileNetV1', build_mbnet, dict(
        arch=ARCH_BAD,
        subnets=SUBNETS_BAD,
        in_channels=WIDTH,
        se_ratio=NOT_FLOAT + (0, -0.5, 1.5),
        out_indices=OUT_INDICES,
        frozen_stages=NOT_INT + (-2, 3),
        norm_eval=NOT_BOOL,
        kernel_choices=('x', 1, [], dict(stage9=3), dict(stage2='x'),
                        dict(stage2=(2, )), dict(stage2=0)),
    )),
    *gate_cases('DSMobileNetV1', build_mbnet, MB_GATE, 'stage',
                ('stage9', 1, None, [])),
    *cases_of('DSResNet', build_resnet, dict(
        depth=('x', 20, None, 18.5, [18]),
        stem=NOT_CHOICE,
        in_channels=WIDTH,
        stem_channels=WIDTH,
        base_channels=WIDTH,
        strides=('x', 1, (1, 2), (1, 2, 2, 'x'), (1, 2, 2, 0), None),
        ratios=('x', 1, [], [0.5, 'x'], [0, 1], [0.5, 1.5], [1.0, 0.5],
                [math.nan, 1.0]),
        fixed_ratios=('x', 1, [], dict(layer9=1.0), dict(stem='x'),
                      dict(stem=0), dict(stem=2)),
        subnets=('x', 1, [], ['x'], [dict(stem=4)]),
        out_indices=OUT_INDICES,
        frozen_stages=NOT_INT + (-2, 5),
        norm_eval=NOT_BOOL,
        zero_init_residual=NOT_BOOL,
        se_stage=NOT_CHOICE[:2] + ('layer0', ),
        se_ratio=NOT_FLOAT + (0, -0.5, 1.5),
        expansion=('x', 0, -1, 2.5),
        num_stages=('x', 0, 5, 2.5),
        dilations=('x', (1, ), (1, 1, 1, 0), (1, 1, 1, 'x')),
        style=('x', 1, None),
        deep_stem=NOT_BOOL,
        avg_down=NOT_BOOL,
        conv_cfg=('x', 1, dict(type='DCN')),
        norm_cfg=('x', 1, dict(type='SyncBN'), dict(type='GN')),
        with_cp=NOT_BOOL,
        drop_path_rate=('x', -0.1, 1.5, None),
        unmatched_keys=('x', 1, [1]),
    )),
    *gate_cases('DSResNet', build_resnet, dict(stage='layer3', window=(1, 3)),
                'stage', ('layer9', 1, None, [])),
    *cases_of('DSViT', build_vit, dict(
        arch=('deit-huge', 1, None, dict(VIT_ARCH, depth=3),
              dict(VIT_ARCH, num_heads='x'), dict(VIT_ARCH, embed_dims=0)),
        img_size=('x', 2, [8], (8, 'x'), None, 0, 4.5),
        patch_size=NOT_INT + (0, -1, 9),
        in_channels=WIDTH,
        subnets=('x', 1, [], ['x'], [dict(embed=8)],
                 dict(smallest=1, widest=1, num=2)),
        fixed_blocks=NOT_INT + (-1, 4),
        out_indices=OUT_INDICES,
        out_type=NOT_CHOICE,
        final_norm=NOT_BOOL,
        idle_head=NOT_BOOL,
        idle_branches=NOT_BOOL,
        qkv_bias=NOT_BOOL,
        drop_path_rate=NOT_FLOAT + (-0.1, 1.0),
        norm_cfg=NOT_DICT + (dict(type='BN'), dict(eps=1e-6)),
        frozen_stages=NOT_INT + (-2, 4),
        interpolate_mode=NOT_CHOICE,
        drop_rate=NOT_FLOAT + (-0.1, 1.0),
        with_cls_token=NOT_BOOL,
        layer_scale_init_value=NOT_FLOAT + (-0.1, ),
        patch_cfg=NOT_DICT,
        layer_cfgs=('x', 1, [{}], [1, 2, 3], dict(num_fcs=3),
                    dict(ffn_type='swiglu_fused'), dict(num_heads=1),
                    dict(drop_rate=2.0), dict(qkv_bias=1), dict(depth=1)),
        pre_norm=NOT_BOOL,
        with_cp=NOT_BOOL,
        unmatched_keys=('gate.', 1, [''], [1], None),
    )),
    inner_case('DSViT', 'norm_cfg.eps', build_vit, dict(type='LN'),
               NOT_FLOAT + (0, -1)),
    *gate_cases('DSViT', build_vit, VIT_GATE, 'block', ('x', 2, -1, None)),
    inner_case('DSViT', 'gate.tokens', build_vit, VIT_GATE, NOT_CHOICE[:2]),
    *cases_of('DSGate', build_gate, dict(
        in_channels=WIDTH,
        num_choices=WIDTH,
        se_ratio=NOT_FLOAT + (0, 1.5),
        features=NOT_CHOICE,
        tokens=NOT_CHOICE[:2] + ([], ),
        head_init=NOT_CHOICE,
    )),
    *cases_of('DSImageClassifier', build_stage1, dict(
        backbone=('x', 1, dict(type='ResNet', depth=18)),
        bootstrap=NOT_CHOICE,
        num_random=NOT_INT + (-1, ),
        ema_momentum=NOT_FLOAT + (0, -0.1, 1.5),
        largest_dropout=NOT_FLOAT + (-0.1, 1.0),
        distill_loss=NOT_DICT + (None, ),
        seed=NOT_INT + (-1, ),
        sampling=NOT_CHOICE,
        usnet_divisor=NOT_INT + (0, ),
        mvco=NOT_DICT + (dict(views=2), ),
        student_label_weight=NOT_FLOAT + (-0.5, [0.5, 0.5, -1], [0.5] * 2),
        draw_largest=NOT_BOOL,
    )),
    inner_case('DSImageClassifier', 'mvco.mode', build_stage1,
               dict(mode='view_mean'), NOT_CHOICE),
    inner_case('DSImageClassifier', 'mvco.consistency_weight', build_stage1,
               dict(mode='largest_consistency'), NOT_FLOAT + (-1, )),
    *cases_of('DSGateClassifier', build_stage2, dict(
        backbone=('x', 1, mbnet_cfg()),
        sgs_rule=NOT_CHOICE,
        gate_label_smooth=NOT_FLOAT + (-0.1, 1.0),
        sgs_class_weight=NOT_CHOICE[:2] + ([], ),
        complexity_weight=NOT_FLOAT + (-1, ),
        madds_unit=NOT_FLOAT + (0, -1),
        tau=NOT_FLOAT + (0, -1),
        routing_mode=NOT_CHOICE,
        stage1_checkpoint=(1, [], {}),
        mask_position=NOT_CHOICE,
        gate_loss_input=NOT_CHOICE,
        keep_stage1_head=NOT_BOOL,
    )),
    *cases_of('DSSingleStageDetector', build_detector, dict(
        backbone=('x', 1, dict(type='mmdet.ResNet', depth=18)),
        bbox_head=('x', 1, None),
        num_random=NOT_INT + (-1, ),
        seed=NOT_INT + (-1, ),
        sampling=NOT_CHOICE,
        usnet_divisor=NOT_INT + (0, ),
    )),
    *cases_of('DSTwoStageDetector', build_two_stage, dict(
        backbone=('x', 1, dict(type='mmdet.ResNet', depth=18)),
        rpn_head=('x', 1, None),
        roi_head=('x', 1, None),
        num_random=NOT_INT + (-1, ),
        seed=NOT_INT + (-1, ),
        sampling=NOT_CHOICE,
        usnet_divisor=NOT_INT + (0, ),
        madds_proposals=('4', 4.5, [4], {}, True, 0, -1),
    )),
    *cases_of('DSGateDetector', build_gate_detector, dict(
        # a backbone without a gate
        backbone=('x', 1, mbnet_cfg(type='mmpretrain.DSMobileNetV1',
                                    out_indices=(1, ))),
        routing_mode=NOT_CHOICE,
        gate_checkpoint=(1, [], {}),
        # Stage II's arguments, refused whatever their value
        stage1_checkpoint=(None, 'stage1.pth', 1),
        gate_training=(None, SGS_MARGIN, 'x'),
    )),
    *cases_of('DSSGSDetector', build_sgs_detector, dict(
        # a backbone without a gate
        backbone=('x', 1, mbnet_cfg(type='mmpretrain.DSMobileNetV1',
                                    out_indices=(1, ))),
        stage1_checkpoint=(1, [], {}),
        gate_training=('x', 1, [], None, dict(colour=1)),
        # DSGateDetector's, passed on
        routing_mode=NOT_CHOICE,
        gate_checkpoint=(1, [], {}),
    )),
    *(inner_case('DSSGSDetector', f'gate_training.{key}',
                 build_sgs_detector, SGS_MARGIN, values)
      for key, values in dict(
          margin=NOT_FLOAT + (-1, ),
          margin_mode=NOT_CHOICE,
          class_weight=NOT_CHOICE[:2] + ([], ),
          label_smooth=NOT_FLOAT + (-0.1, 1.0),
          complexity_weight=NOT_FLOAT + (-1, ),
          madds_unit=NOT_FLOAT + (0, -1),
          tau=NOT_FLOAT + (0, -1),
          gate_loss_input=NOT_CHOICE,
          keep_stage1_head=NOT_BOOL,
          mask_position=('after_act', 'before_act')).items()),
    *cases_of('SubnetValLoop', build_val_loop, dict(
        subnets=('x', 1, [None], [1.5], {}),
        calibrate=NOT_DICT + (dict(colour=1), ),
        dynamic=NOT_BOOL,
        fp16=NOT_BOOL,
        metric=(1, None, ['accuracy/top1']),
        ema=NOT_BOOL,
    )),
    inner_case('SubnetValLoop', 'calibrate.num_batches', build_val_loop,
               {}, NOT_INT + (0, -1)),
    *cases_of('DDPConsistencyHook', DDPConsistencyHook, dict(
        interval=NOT_INT + (0, -1))),
    # a None search option means "not given": the config's value holds
    *cases_of('search options', build_search, dict(
        ranking=NOT_CHOICE[:2], noise_order=NOT_CHOICE[:2],
        criterion=NOT_CHOICE[:2],
        ranking_scope=NOT_CHOICE[:2], step_rule=NOT_CHOICE[:2],
        stage1_list=NOT_CHOICE[:2], keep_noise=('False', 1, []),
        base_epochs=SEARCH_NOT_INT + (-1, ),
        **{k: SEARCH_NOT_INT + (0, ) for k in (
            'held_out', 'finetune_iters', 'check_interval', 'divisor',
            'groups')},
        num_keep=SEARCH_NOT_INT + (1, ),
        seed=SEARCH_NOT_INT + (-1, ),
        base_lr=NOT_FLOAT[:2] + (0, -1, math.nan),
        base_weight_decay=NOT_FLOAT[:2] + (-1, math.inf),
        min_ratio=NOT_FLOAT[:2] + (0, 1.5),
        threshold=NOT_FLOAT[:2] + (-1, 101),
        finetune_lr=NOT_FLOAT[:2] + (0, -1),
        search_groups=('x', 1),
        load_from=(1, []),
    )),
]


@pytest.mark.parametrize('case', CASES,
                         ids=[f'{c.component}:{c.key}' for c in CASES])
def test_bad_value_stops_with_an_error_naming_the_key(case):
    unnamed = []
    for value in case.values:
        try:
            case.build(**{case.key: value})
        except (ValueError, TypeError) as e:
            if case.key not in str(e):
                unnamed.append(f'{value!r}: {type(e).__name__}: {e}')
        else:
            unnamed.append(f'{value!r}: accepted')
    assert not unnamed, f'{case.component} {case.key}:\n' + '\n'.join(
        unnamed)


# --- the tools' command-line options -----------------------------------------
def load_tool(path: str):
    spec = importlib.util.spec_from_file_location(
        'tool_' + osp.basename(path)[:-3], osp.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TOOL(NamedTuple):
    path: str
    argv: Sequence[str]  # what the option is added to
    options: Dict[str, Sequence[str]]  # option: bad values


TOOLS = [
    TOOL('tools/calibrate_bn.py', ['c.py', 'w.pth', '--out', 'o.pth'],
         {'--num-batches': ('x', '0', '1.5'), '--launcher': ('x', )}),
    TOOL('tools/export_subnet.py', ['c.py', 'w.pth', '--subnet', '0',
                                    '--out', 'o'],
         {'--shape': ('x', '0', '-1')}),
    TOOL('tools/analysis/get_flops.py', ['c.py'],
         {'--shape': ('x', '0', '-1')}),
    TOOL('tools/analysis/benchmark.py', ['c.py'], {
        '--batch-sizes': ('x', '0'), '--modes': ('x', ),
        '--device': ('tpu', ), '--warmup': ('x', '-1', '1.5'),
        '--repeats': ('x', '0'), '--min-sample-ms': ('x', '-1', 'nan'),
        '--allocator': ('x', ), '--shape': ('x', '0'),
        '--backends': ('x', ), '--routing-mix': ('x', '0.5,half')}),
    TOOL('tools/export_dynamic.py', ['c.py', '--random-init', '--out', 'o'],
         {'--batch-size': ('x', '0'), '--shape': ('x', '0', '-1')}),
    TOOL('tools/search_subnets.py', ['c.py', '--work-dir', 'w'], {
        '--groups': ('x', '0'), '--min-ratio': ('x', '0', '1.5'),
        '--held-out': ('x', '0'), '--threshold': ('x', '-1', '101'),
        '--finetune-iters': ('x', '0'), '--num-keep': ('x', '1'),
        '--ranking': ('x', ), '--noise-order': ('x', ),
        '--criterion': ('x', ), '--base-epochs': ('x', '-1'),
        '--seed': ('x', '-1'), '--max-steps': ('x', '0'),
        '--ranking-scope': ('x', ), '--keep-noise': ('x', '1'),
        '--step-rule': ('x', ), '--stage1-list': ('x', )}),
    TOOL('tools/train.py', ['c.py'], {'--launcher': ('x', )}),
    TOOL('tools/test.py', ['c.py', 'w.pth'], {'--launcher': ('x', )}),
    TOOL('tools/analysis/compare_subnets.py', ['RESULTS', 'RESULTS',
                                               '--out', 'o'],
         {'--num-images': ('x', '0')}),
]


@pytest.fixture
def results_json(tmp_path) -> str:
    path = tmp_path / 'subnet_results.json'
    path.write_text(json.dumps(dict(subnets=[])))
    return str(path)


def _shape_values(option: str, value: str) -> List[str]:
    """``--shape`` takes two values: the bad one and a good one."""
    return [value, '8'] if option == '--shape' else [value]


@pytest.mark.parametrize('tool', TOOLS, ids=[t.path for t in TOOLS])
def test_bad_tool_option_stops_naming_the_option(tool, monkeypatch, capsys,
                                                  results_json):
    module = load_tool(tool.path)
    argv = [results_json if a == 'RESULTS' else a for a in tool.argv]
    unnamed = []
    for option, values in tool.options.items():
        for value in values:
            monkeypatch.setattr(sys, 'argv', [
                tool.path, *argv, option, *_shape_values(option, value)])
            with pytest.raises(SystemExit) as exit_:
                module.parse_args()
            err = capsys.readouterr().err
            if exit_.value.code != 2 or option not in err:
                unnamed.append(f'{option} {value}: {err.strip()!r}')
    assert not unnamed, '\n'.join(unnamed)


# --- coverage ----------------------------------------------------------------
# arguments built or checked by mmengine / mmpretrain themselves
# mmengine's and mmdet's own arguments
NOT_OURS = {'self', 'init_cfg', 'kwargs', 'neck', 'head', 'runner',
            'dataloader', 'evaluator', 'train_cfg', 'test_cfg',
            'data_preprocessor'}
COMPONENTS = {
    'DSMobileNetV1': DSMobileNetV1, 'DSResNet': DSResNet, 'DSViT': DSViT,
    'DSGate': DSGate, 'DSImageClassifier': DSImageClassifier,
    'DSGateClassifier': DSGateClassifier, 'SubnetValLoop': SubnetValLoop,
    'DDPConsistencyHook': DDPConsistencyHook,
    'DSSingleStageDetector': DSSingleStageDetector,
    'DSGateDetector': DSGateDetector,
    'DSSGSDetector': DSSGSDetector,
    'DSTwoStageDetector': DSTwoStageDetector,
}


def _typed_options(path: str) -> List[str]:
    """The options of a tool that take a typed value or a choice."""

    class Parsed(Exception):
        pass

    def capture(parser, *args, **kwargs):
        raise Parsed(parser)

    module = load_tool(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, 'parse_args', capture)
        with pytest.raises(Parsed) as parsed:
            module.parse_args()
    parser = parsed.value.args[0]
    return [a.option_strings[-1] if a.option_strings[-1].startswith('--')
            else a.option_strings[0] for a in parser._actions
            if a.option_strings and (a.choices or a.type not in (None, str))
            and a.dest not in ('local_rank', )]


def test_every_key_is_fuzzed():
    fuzzed = {(c.component, c.key.split('.')[0]) for c in CASES}
    missing = [
        (name, p) for name, cls in COMPONENTS.items()
        for p in inspect.signature(cls.__init__).parameters
        if p not in NOT_OURS and (name, p) not in fuzzed
    ]
    missing += [('search options', k) for k in DEFAULTS
                if ('search options', k) not in fuzzed]
    for tool in TOOLS:
        missing += [(tool.path, o) for o in _typed_options(tool.path)
                    if o not in tool.options]
    assert not missing, f'keys without fuzz cases: {missing}'
    keys = len(CASES) + sum(len(t.options) for t in TOOLS)
    values = sum(len(c.values) for c in CASES) + sum(
        len(v) for t in TOOLS for v in t.options.values())
    print(f'\nconfig fuzz: {keys} keys, {values} bad values, each must '
          'stop with a ValueError/TypeError (SystemExit 2 for the tools) '
          'naming its key')

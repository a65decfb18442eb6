# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Evaluating DS detectors: the gate-routed detector's three paths, MAdds
per routed image, the per-sub-network loop with mmdet's VOCMetric and the
test tool on the digits detection config."""
import copy
import json
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

pytest.importorskip('mmdet')  # the optional 'det' extra
from mmdet.registry import MODELS  # noqa: E402
from mmdet.testing import demo_mm_inputs  # noqa: E402

import dsnet_mm  # noqa: E402,F401 (registers the DS models)
from conftest import randomize_bn, run_tool  # noqa: E402
from dsnet_mm.analysis import count_complexity  # noqa: E402
from dsnet_mm.analysis import subnet_complexity  # noqa: E402
from dsnet_mm.models.detectors import DSGateDetector  # noqa: E402
from dsnet_mm.ops import zero_pad_channels  # noqa: E402
from test_ds_detector import tiny_detector_cfg  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DIGITS_CFG = osp.join(ROOT, 'configs/det/ssd_ds-mbnet_digits_voc.py')
DIGITS_GATE_CFG = osp.join(ROOT,
                           'configs/det/ssd_ds-mbnet_digits_voc_gate.py')
MODES = ('slice', 'bucket', 'mask')


@pytest.fixture(autouse=True)
def mmdet_scope():
    """mmdet's scope for each test, and the previous one restored after
    it (the other test modules build in mmpretrain's)."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def gated_detector(routing_mode: str = 'bucket') -> DSGateDetector:
    """The tiny RetinaNet of test_ds_detector with a gate before stage 3
    routing over the three listed sub-networks; each sub-network's BN rows
    get their own statistics, so a wrong row would show."""
    cfg = tiny_detector_cfg(type='DSGateDetector', routing_mode=routing_mode)
    cfg.backbone.gate = dict(stage='stage3', window=(0, 3))
    torch.manual_seed(0)
    return randomize_bn(MODELS.build(cfg)).eval()


def route_by(model: DSGateDetector, positions) -> None:
    """Make the model route image ``b`` to window position
    ``positions[b % len(positions)]``, whatever the gate says."""
    def route(gate_logits, shape):
        b = torch.arange(gate_logits.shape[0]) % len(positions)
        return torch.tensor(positions)[b]

    model.route = route


def batch(n: int = 4, size: int = 64) -> dict:
    return demo_mm_inputs(n, [(3, size, size)] * n, num_items=[2] * n,
                          num_classes=3)


# --- the routed detector -----------------------------------------------
def test_slice_bucket_and_mask_paths_give_the_same_detections():
    model = gated_detector()
    route_by(model, [0, 2, 1])
    data = model.data_preprocessor(batch(), False)
    with torch.no_grad():
        results = {
            # predict writes into the samples it is given: a copy each
            mode: model.predict(data['inputs'],
                                copy.deepcopy(data['data_samples']),
                                mode=mode)
            for mode in MODES
        }
    routed = [s.routed_subnet for s in results['slice']]
    assert routed == [model.window[k].position for k in (0, 2, 1, 0)]
    for mode in ('bucket', 'mask'):
        assert [s.routed_subnet for s in results[mode]] == routed
        for ref, got in zip(results['slice'], results[mode]):
            ref, got = ref.pred_instances, got.pred_instances
            assert len(ref) == len(got) > 0
            assert torch.equal(got.labels, ref.labels)
            torch.testing.assert_close(got.bboxes, ref.bboxes, atol=1e-3,
                                       rtol=1e-4)
            torch.testing.assert_close(got.scores, ref.scores, atol=1e-5,
                                       rtol=1e-4)


def test_routed_backbone_outputs_are_zero_padded_to_the_widest():
    model = gated_detector()
    route_by(model, [0, 2])
    inputs = model.data_preprocessor(batch(2), False)['inputs']
    with torch.no_grad():
        feats, _, choice = model.forward_dynamic(inputs, 'bucket')
    assert [f.shape[1] for f in feats] == list(model.backbone.out_widths)
    narrow = model.window[int(choice[0])]
    assert narrow['stage3'] < feats[0].shape[1]
    assert feats[0][0, narrow['stage3']:].abs().sum() == 0


@pytest.mark.parametrize('position', [0, 1, 2])
def test_madds_of_a_routed_image_equal_its_static_subnets(position):
    """The MAdds a routed image reports are those of its sub-network's
    static detector plus the gate's slimming head, and are what the batch-1
    slice path really runs (counted on it)."""
    model = gated_detector('slice')
    route_by(model, [position])
    data = model.data_preprocessor(batch(1), False)
    inputs = data['inputs']
    with torch.no_grad():
        (sample, ) = model.predict(inputs, data['data_samples'])
    spec = model.window[position]
    assert sample.routed_subnet == spec.position
    (static, ) = subnet_complexity(model, [spec], inputs.shape[1:])
    h = model.backbone.forward_pre_gate(inputs)[0]
    gate = model.gate.head_madds(model.backbone.gate_input_width(h))
    assert sample.routed_madds == static['madds'] + gate

    def routed_forward():
        feats = model.forward_dynamic(inputs)[0]
        return model.bbox_head(model.neck(feats))

    assert count_complexity(model, routed_forward)['madds'] == \
        sample.routed_madds


def test_madds_count_a_conv_on_a_zero_padded_map_at_its_sliced_width():
    """The neck's first conv reading a narrow sub-network's padded output
    is counted as the conv with sliced input weights it equals."""
    conv = nn.Conv2d(32, 8, 3, padding=1)
    x = torch.zeros(1, 20, 5, 5)
    cost = count_complexity(conv, lambda: conv(zero_pad_channels(x, 32)))
    assert cost['madds'] == 5 * 5 * 8 * 20 * 9
    assert cost['params'] == 8 * 20 * 9 + 8


def test_narrower_subnets_cost_less_in_the_detector():
    model = gated_detector()
    madds = model.window_madds((3, 64, 64))
    assert madds == sorted(madds) and madds[0] < madds[-1]


# --- the per-sub-network loop on the digits detection config -------------
@pytest.fixture(scope='module')
def digits_voc(tmp_path_factory) -> str:
    """``data_root`` of a digits-VOC set of 2 trainval and 2 test images."""
    from dsnet_mm.datasets import write_digits_voc
    root = write_digits_voc(str(tmp_path_factory.mktemp('data')),
                            max_images=2)
    return osp.join(root, 'VOCdevkit') + '/'


def tiny_digits_cfg(config: str, data_root: str, work_dir: str) -> Config:
    """The config over the tiny set, single-process, random weights, the
    loop on the narrowest listed and the largest sub-network only."""
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    cfg.model.pop('gate_checkpoint', None)
    cfg.work_dir = work_dir
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].update(batch_size=2, num_workers=0, persistent_workers=False)
        cfg[key].dataset.data_root = data_root
    cfg.test_cfg.update(subnets=[0, 'largest'],
                        calibrate=dict(num_batches=1))
    cfg.default_hooks.logger.interval = 1
    return cfg


@pytest.mark.parametrize('config', [DIGITS_CFG, DIGITS_GATE_CFG])
def test_subnet_test_loop_reports_map_and_madds_per_subnet(
        digits_voc, tmp_path, config):
    cfg = tiny_digits_cfg(config, digits_voc, str(tmp_path))
    gated = config == DIGITS_GATE_CFG
    if gated:  # the report compares the window's members: evaluate them
        cfg.model.backbone.gate.window = (0, 2)
        cfg.test_cfg.subnets = [0, 1, 'largest']
    metrics = Runner.from_cfg(cfg).test()
    for name in ('subnet_0', 'largest'):
        assert 0 <= metrics[f'{name}/pascal_voc/mAP'] <= 1
        assert metrics[f'{name}/madds'] > 0
    assert metrics['subnet_0/madds'] < metrics['largest/madds']
    with open(osp.join(tmp_path, 'subnet_results.json')) as f:
        results = json.load(f)
    assert results['metric'] == 'pascal_voc/mAP'
    assert results['input_shape'] == [3, 128, 128]
    report = open(osp.join(tmp_path, 'report.md')).read()
    assert ('| Sub-network | MAdds (M) | Backbone MAdds (M) | Params (M) | '
            'mAP |') in report
    assert 0 < metrics['subnet_0/backbone_madds'] < metrics['subnet_0/madds']
    assert 'at 128x128' in report
    assert osp.isfile(osp.join(tmp_path, 'accuracy_vs_madds.png'))
    assert ('dynamic/pascal_voc/mAP' in metrics) == gated
    if gated:
        routed = {k: v for k, v in metrics.items()
                  if k.startswith('dynamic/routing/subnet_')}
        assert sum(routed.values()) == 2  # the two test images
        assert metrics['dynamic/routing/mean_madds'] > 0
        assert '## Dynamic model' in report and '- mAP: ' in report
        # the images' difficulty levels (PackDetInputs' 'level') split the
        # routing; the rows have no per-level mAP
        assert '### Routing by level' in report
        assert '| Level | Images | Mean MAdds (M) |' in report


def test_loop_names_a_metric_key_the_evaluator_lacks(digits_voc, tmp_path):
    cfg = tiny_digits_cfg(DIGITS_CFG, digits_voc, str(tmp_path))
    cfg.test_cfg.metric = 'accuracy/top1'
    with pytest.raises(ValueError, match="'pascal_voc/mAP'"):
        Runner.from_cfg(cfg).test()


# --- the gate from a classification checkpoint; the test tool -------------
SLIM_HEAD = 'backbone.layers.1.0.se.slim_head.weight'  # stage2's gate


def _gate_checkpoint(path: str, window: int) -> torch.Tensor:
    """A stand-in classification Stage II checkpoint: a classifier's keys
    (no neck or head of a detector) and a slimming head over ``window``
    sub-networks."""
    cfg = Config.fromfile(DIGITS_GATE_CFG)
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.gate.window = (0, window)
    cfg.model.gate_checkpoint = None
    state = MODELS.build(cfg.model).state_dict()
    torch.manual_seed(1)
    weight = torch.randn_like(state[SLIM_HEAD])
    classifier = {k: v for k, v in state.items() if k.startswith('backbone.')}
    classifier.update({SLIM_HEAD: weight, 'head.fc.weight': torch.zeros(1)})
    torch.save(dict(state_dict=classifier, meta={}), path)
    return weight


def test_gate_checkpoint_loads_only_the_slimming_head(tmp_path):
    path = str(tmp_path / 'stage2.pth')
    weight = _gate_checkpoint(path, 8)  # the config's window: 8 members
    cfg = Config.fromfile(DIGITS_GATE_CFG)
    cfg.model.backbone.init_cfg = None
    cfg.model.gate_checkpoint = path
    model = MODELS.build(cfg.model)
    assert torch.equal(model.state_dict()[SLIM_HEAD], weight)
    assert model.loaded_elsewhere == (model.gate_prefix, 'cost_penalty')


def test_gate_checkpoint_of_another_window_is_refused(tmp_path):
    path = str(tmp_path / 'stage2.pth')
    _gate_checkpoint(path, 4)
    cfg = Config.fromfile(DIGITS_GATE_CFG)
    cfg.model.backbone.init_cfg = None
    cfg.model.gate_checkpoint = path
    with pytest.raises(ValueError, match='shape mismatch'):
        MODELS.build(cfg.model)


def test_test_tool_evaluates_the_routed_digits_detector(digits_voc,
                                                        tmp_path):
    """tools/test.py on the gated digits config: a detection checkpoint
    without a gate, the gate from a classification checkpoint, every
    window member and the routed detector in one report."""
    cfg = Config.fromfile(DIGITS_CFG)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    det = str(tmp_path / 'det_stage1.pth')
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict(),
                    meta={}), det)
    gate = str(tmp_path / 'stage2.pth')
    _gate_checkpoint(gate, 2)
    out = tmp_path / 'metrics.json'
    loaders = [f'{k}.{o}' for k in ('train_dataloader', 'test_dataloader')
               for o in ('batch_size=2', 'num_workers=0',
                         'persistent_workers=False',
                         f'dataset.data_root={digits_voc}')]
    proc = run_tool(
        'tools/test.py', DIGITS_GATE_CFG, det, '--work-dir', str(tmp_path),
        '--out', str(out), '--cfg-options', f'model.gate_checkpoint={gate}',
        'model.backbone.init_cfg=None', 'model.backbone.gate.window=[0,2]',
        'test_cfg.subnets=[0,1,largest]', 'test_cfg.calibrate.num_batches=1',
        *loaders)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert {'subnet_0/pascal_voc/mAP', 'subnet_1/pascal_voc/mAP',
            'largest/pascal_voc/mAP', 'dynamic/pascal_voc/mAP',
            'dynamic/routing/mean_madds'} <= set(metrics)
    assert 'loaded the gate' in proc.stdout + proc.stderr
    assert osp.isfile(tmp_path / 'report.md')


def test_a_given_subnet_predicts_without_routing():
    model = gated_detector()
    route_by(model, [0])
    data = model.data_preprocessor(batch(2), False)
    largest = model.space.largest
    with torch.no_grad():
        got = model(data['inputs'], copy.deepcopy(data['data_samples']),
                    mode='predict', spec=largest)
        with model.subnet(largest):  # the one way: no routing either
            expected = model.predict(data['inputs'],
                                     copy.deepcopy(data['data_samples']))
    for g, e in zip(got, expected):
        assert 'routed_subnet' not in g
        torch.testing.assert_close(g.pred_instances.scores,
                                   e.pred_instances.scores)


def test_dynamic_detector_needs_a_gated_backbone():
    cfg = tiny_detector_cfg(type='DSGateDetector')
    with pytest.raises(ValueError, match='needs a DS backbone with a gate'):
        MODELS.build(cfg)


def test_missing_gate_checkpoint_is_named(tmp_path):
    cfg = tiny_detector_cfg(type='DSGateDetector',
                            gate_checkpoint=str(tmp_path / 'none.pth'))
    cfg.backbone.gate = dict(stage='stage3', window=(0, 3))
    with pytest.raises(FileNotFoundError, match='none.pth'):
        MODELS.build(cfg)

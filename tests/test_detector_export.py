# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A DS detector's sub-network as a static network (the export tool's graph
up to the head outputs), in cached inference and in the benchmark."""
import copy
import json
import os.path as osp

import pytest
import torch
from mmengine.registry import DefaultScope

pytest.importorskip('mmdet')  # the optional 'det' extra
from mmdet.registry import MODELS  # noqa: E402

import dsnet_mm  # noqa: E402,F401 (registers the DS models)
from conftest import randomize_bn, run_tool  # noqa: E402
from dsnet_mm.analysis.benchmark import (BenchmarkOptions,  # noqa: E402
                                         benchmark)
from dsnet_mm.deploy import (StaticDetector,  # noqa: E402
                             detector_output_names, static_subnet)
from dsnet_mm.ops import inference_cache  # noqa: E402
from test_ds_detector import DIGITS_CFG, tiny_detector_cfg  # noqa: E402


@pytest.fixture(autouse=True)
def mmdet_scope():
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield


def detector(**kwargs):
    torch.manual_seed(0)
    return randomize_bn(MODELS.build(tiny_detector_cfg(**kwargs))).eval()


def flat(out):
    return [out] if isinstance(out, torch.Tensor) else \
        [t for part in out for t in flat(part)]


@pytest.mark.parametrize('key', ['smallest', 1, 'largest'])
def test_static_detector_equals_the_sliced_subnet(key):
    """FPN on two stages: the taps, the zero-padding of the narrower
    sub-networks and the copied neck and head."""
    model = detector()
    spec = model.space.get(key)
    x = torch.randn(2, 3, 64, 64)
    static = static_subnet(model, spec)
    assert isinstance(static, StaticDetector)
    with torch.no_grad(), model.subnet(spec):
        expected = flat(model._forward(x))
        got = static(x)
    assert len(got) == len(expected) == 4  # 2 levels x (cls, box)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_narrow_taps_reach_sliced_convs_unpadded():
    """The FPN's lateral convs read the smallest's taps at their own width
    (sliced input weights): nothing is padded, the outputs are the DS
    detector's."""
    model = detector()
    static = static_subnet(model, model.space.get('smallest'))
    x = torch.randn(1, 3, 64, 64)
    feats = static.features(x)
    assert static.widths == tuple(f.shape[1] for f in feats) == (12, 16)
    assert model.backbone.out_widths == (24, 32)
    assert [c.conv.in_channels for c in static.neck.lateral_convs] == \
        [12, 16]
    with torch.no_grad(), model.subnet('smallest'):
        expected = flat(model._forward(x))
    for g, e in zip(static(x), expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


class _Prepared(torch.nn.Module):
    """An FPN whose first tap goes through a BN (``bn=True``) or is also
    read by a functional op (its channel mean, ``bn=False``) before."""

    def __init__(self, fpn, bn: bool):
        super().__init__()
        self.fpn = fpn
        self.bn = randomize_bn(torch.nn.BatchNorm2d(24)).eval() if bn \
            else None

    def forward(self, feats):
        first = self.bn(feats[0]) if self.bn is not None else feats[0]
        outs = self.fpn((first, *feats[1:]))
        if self.bn is None:
            outs = (outs[0] + feats[0].mean(1, keepdim=True), *outs[1:])
        return outs


@pytest.mark.parametrize('bn', [True, False])
def test_a_tap_read_by_more_than_dense_convs_stays_padded(bn):
    """Slicing needs every reader of a tap to be a dense conv (a BN of the
    padded tap is not zero on the padding) and the sliced copy to give the
    same outputs (a channel mean reads the padding too): where either
    fails the tap stays padded; the other tap is still sliced."""
    model = detector()
    model.neck = _Prepared(model.neck, bn)
    static = static_subnet(model, model.space.get('smallest'))
    assert static.widths == (24, 16)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        padded = StaticDetector(static.backbone, model.backbone.out_indices,
                                (24, 32), copy.deepcopy(model.neck),
                                copy.deepcopy(model.bbox_head))(x)
    for g, e in zip(static(x), padded):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_output_names_list_every_level():
    assert detector_output_names(detector()) == (
        'cls_score_0', 'cls_score_1', 'bbox_pred_0', 'bbox_pred_1')


def test_cached_inference_of_a_last_stage_detector_predicts_the_same():
    """With only the last stage tapped, cached inference runs the static
    backbone in the DS backbone's place; the detections do not change."""
    cfg = tiny_detector_cfg(
        neck=dict(type='FPN', in_channels=[32], out_channels=8, num_outs=2,
                  add_extra_convs='on_input'))
    cfg.backbone.out_indices = (3, )
    torch.manual_seed(0)
    model = randomize_bn(MODELS.build(cfg)).eval()
    x = torch.randn(2, 3, 64, 64)
    model.set_subnet(0)
    with torch.no_grad():
        expected = flat(model._forward(x))
        with inference_cache(model) as cache:
            with cache.checked():
                got = flat(model._forward(x))
            assert len(cache._static) == 1  # the static backbone ran
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_benchmark_times_slice_and_static_of_a_detector():
    model = detector()
    specs = [model.space.smallest, model.space.largest]
    rows = benchmark(model, specs, (3, 64, 64), torch.device('cpu'),
                     BenchmarkOptions(['slice', 'static'], [2], warmup=0,
                                      repeats=1, min_sample_ms=0))
    assert {(r['mode'], r['subnet']) for r in rows} == {
        (m, s.name) for m in ('slice', 'static') for s in specs}
    madds = {r['subnet']: r['madds'] for r in rows}
    assert madds[specs[0].name] < madds['largest']


@pytest.mark.parametrize('kwargs, match', [
    (dict(modes=['mask']), r"mode.*'slice', 'static'"),
    (dict(modes=['static'], backends=['torch', 'ort']), 'eager torch only'),
])
def test_benchmark_refuses_what_a_detector_cannot_time(kwargs, match):
    model = detector()
    modes = kwargs.pop('modes')
    with pytest.raises(ValueError, match=match):
        benchmark(model, [model.space.smallest], (3, 64, 64),
                  torch.device('cpu'), BenchmarkOptions(modes, [1], **kwargs))


def test_export_tool_writes_an_mmdet_free_digits_detector(tmp_path):
    """tools/export_subnet.py on the digits SSD config: .pt2 and ONNX equal
    the DS detector's head outputs, and the graph holds no mmdet op."""
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        from mmengine.config import Config
        cfg = Config.fromfile(DIGITS_CFG)
        cfg.model.backbone.init_cfg = None
        model = randomize_bn(MODELS.build(cfg.model))
    ckpt = str(tmp_path / 'det.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    out = tmp_path / 'export'
    proc = run_tool('tools/export_subnet.py', DIGITS_CFG, ckpt, '--subnet',
                    '3', '--out', str(out), '--onnx', '--shape', '128', '128',
                    '--cfg-options', 'model.backbone.init_cfg=None')
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / 'subnet_3.json').read_text())
    assert report['outputs'] == [f'{k}_{i}' for k in ('cls_score',
                                                      'bbox_pred')
                                 for i in range(3)]
    assert report['pt2_max_diff'] < 1e-4 and report['onnx_max_diff'] < 1e-4
    graph = torch.export.load(str(out / 'subnet_3.pt2')).graph_module.code
    assert 'mmdet' not in graph and 'mmcv' not in graph
    assert osp.getsize(out / 'subnet_3.onnx') > 0

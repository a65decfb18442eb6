# Copyright (c) dsnet_mm contributors. All rights reserved.
"""A gated model exported as ONNX files that route each image themselves."""
import json

import numpy as np
import pytest
import torch
from mmengine.config import Config

from conftest import randomize_bn
from dsnet_mm.deploy import OrtDynamicModel, export_dynamic, static_subnet
from dsnet_mm.engine import build_model_from_cfg, calibrate_bn
from dsnet_mm.ops import DSBatchNorm2d

MBNET = 'configs/ds_mbnet_digits_gate.py'
RESNET = 'configs/ds_resnet_digits_gate.py'
# sub-networks 3..7: window positions differ from sub-network indices
WINDOW = (3, 5)


def images(n: int, seed: int) -> torch.Tensor:
    """Normalised images of varied contrast, so the gate routes them
    apart."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 3.0, n)[:, None, None, None]
    return torch.randn(n, 3, 32, 32, generator=g) * scale


def gated_model(config: str, **backbone):
    """A random gated model, its BN statistics calibrated on random images
    for every window member (so the images stay apart by the gate's input,
    and the members share their statistics before the gate, which they
    compute alike), a random slimming head and a cost penalty that spends
    half way between the window's narrowest and widest."""
    cfg = Config.fromfile(config)
    cfg.model.backbone.update(backbone)
    torch.manual_seed(0)
    model = randomize_bn(build_model_from_cfg(cfg)).eval()
    x = images(64, seed=1)
    for spec in model.window:
        # raw pixels: the data preprocessor normalises them back to x
        calibrate_bn(model, [dict(inputs=list(x * 82 + 57))], spec, 1)
    with torch.no_grad():
        model.gate.slim_head.weight.normal_(0, 3)
        gate_logits = model.backbone.forward_pre_gate(x)[1]
    costs = model.relative_costs(x.shape[1:])
    model.fit_budget(gate_logits, x.shape[1:], float(costs[0] + 1) / 2)
    return model


@pytest.fixture(scope='module')
def mbnet():
    return gated_model(MBNET, gate=dict(stage='stage4', window=WINDOW))


@pytest.fixture(scope='module')
def exported(mbnet, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('dynamic'))
    export_dynamic(mbnet, out, (32, 32), batch_size=16)
    return out


def test_onnx_runtime_routes_and_classifies_as_the_model(mbnet, exported):
    x = images(24, seed=2)
    with torch.no_grad():
        expected, gate_logits, choice = mbnet.forward_dynamic(x, 'bucket')
    logits, routes = OrtDynamicModel(exported)(x.numpy())
    assert np.array_equal(routes, choice.numpy())
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=0)
    # what makes the comparison sharp: several members run, and the cost
    # penalty moves images away from the gate's own argmax
    assert len(np.unique(routes)) >= 3
    assert (choice != gate_logits.argmax(-1)).any()


def test_forced_routes_give_the_static_subnets_logits(mbnet, exported):
    x = images(10, seed=3)
    forced = np.array([4, 0, 2, 4, 1, 3, 0, 0, 2, 1])
    logits, routes = OrtDynamicModel(exported)(x.numpy(), routes=forced)
    assert np.array_equal(routes, forced)
    with torch.no_grad():
        for k, spec in enumerate(mbnet.window):
            sel = np.flatnonzero(forced == k)
            np.testing.assert_allclose(
                logits[sel], static_subnet(mbnet, spec)(x[sel]).numpy(),
                atol=1e-4, rtol=0)


def test_manifest_records_window_costs_and_check(mbnet, exported):
    with open(f'{exported}/dynamic.json') as f:
        manifest = json.load(f)
    shape = (3, 32, 32)
    window = manifest['window']
    assert [m['index'] for m in window] == [3, 4, 5, 6, 7]
    assert [m['name'] for m in window] == [s.name for s in mbnet.window]
    assert [m['madds'] for m in window] == mbnet.window_madds(shape)
    assert [m['relative_cost'] for m in window] == \
        mbnet.relative_costs(shape).tolist()
    assert manifest['cost_penalty'] == float(mbnet.cost_penalty) != 0
    assert manifest['input_shape'] == list(shape)
    assert manifest['normalisation'] == dict(mean=[57.0] * 3, std=[82.0] * 3)
    check = manifest['check']
    assert check['routes_identical'] and check['logits_max_diff'] < 1e-4
    assert sum(check['images_per_member']) == 16


def test_routes_outside_the_window_are_refused(exported):
    model = OrtDynamicModel(exported)
    with pytest.raises(ValueError, match=r'window positions in 0\.\.4'):
        model(images(2, seed=4).numpy(), routes=np.array([0, 5]))


def test_resnet_pooled_gate_routes_as_the_model(tmp_path):
    model = gated_model(RESNET, gate=dict(stage='layer3', window=(0, 4),
                                          features='pooled'))
    # statistics rows of the other members differ before the gate too (as
    # without recalibration): the shared part must run the first member's,
    # as forward_pre_gate does
    rows = [s.stats for s in model.window[1:]]
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, DSBatchNorm2d):
                bn.running_mean[rows] += torch.rand(len(rows), bn.num_features)
    manifest = export_dynamic(model, str(tmp_path), (32, 32), batch_size=4)
    assert manifest['backbone'] == 'DSResNet'
    x = images(16, seed=5)
    with torch.no_grad():
        expected, _, choice = model.forward_dynamic(x, 'bucket')
    logits, routes = OrtDynamicModel(str(tmp_path))(x.numpy())
    assert np.array_equal(routes, choice.numpy())
    assert len(np.unique(routes)) >= 2
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=0)


def test_a_model_without_gate_is_refused(tmp_path):
    model = build_model_from_cfg(Config.fromfile('configs/ds_mbnet_digits.py'))
    with pytest.raises(TypeError, match='DSGateClassifier.*DSImageClassifier'):
        export_dynamic(model, str(tmp_path), (32, 32))


def test_sessions_can_be_told_not_to_spin(exported):
    """The benchmark's sessions must not spin after a run (their threads
    would take the cores of the torch rows timed between them)."""
    from dsnet_mm.deploy.ort_dynamic import ort_session_options
    quiet = ort_session_options(2, spinning=False)
    assert quiet.intra_op_num_threads == 2
    assert quiet.get_session_config_entry(
        'session.intra_op.allow_spinning') == '0'
    with pytest.raises(Exception, match='allow_spinning'):
        # onnxruntime's default (spinning) is not an entry
        ort_session_options().get_session_config_entry(
            'session.intra_op.allow_spinning')
    model = OrtDynamicModel(exported, intra_op_threads=1, spinning=False)
    images = np.zeros((2, *model.input_shape), np.float32)
    assert model(images)[0].shape[0] == 2

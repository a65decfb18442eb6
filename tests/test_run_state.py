"""One run state for the four DS models: one forward signature, one way to
run a sub-network without routing."""
import copy
import inspect

import pytest
import torch
from mmengine.config import Config

from conftest import randomize_bn
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.models.classifiers import DSGateClassifier, DSImageClassifier
from dsnet_mm.models.detectors import (DSGateDetector, DSSGSDetector,
                                       DSSingleStageDetector,
                                       DSTwoStageDetector)
from dsnet_mm.models.run_state import SubnetRunMixin

MODELS = (DSImageClassifier, DSGateClassifier, DSSingleStageDetector,
          DSTwoStageDetector, DSGateDetector, DSSGSDetector)


@pytest.mark.parametrize('cls', MODELS, ids=lambda c: c.__name__)
def test_every_model_has_the_one_forward(cls):
    assert cls.forward is SubnetRunMixin.forward
    assert list(inspect.signature(cls.forward).parameters) == [
        'self', 'inputs', 'data_samples', 'mode', 'spec']
    for mode in cls.extra_modes:
        assert callable(getattr(cls, f'_forward_{mode}'))
    assert 'subnet' in dir(cls) and 'without_routing' not in dir(cls)


@pytest.fixture(scope='module')
def gate_model():
    torch.manual_seed(0)
    cfg = Config.fromfile('configs/ds_mbnet_digits_gate.py')
    cfg.model.stage1_checkpoint = None
    cfg.model.backbone.gate.window = (10, 4)
    return randomize_bn(build_model_from_cfg(cfg)).eval()


def test_gated_classifier_predicts_the_given_subnet_without_routing(
        gate_model):
    model = gate_model
    x = torch.randn(4, 3, 32, 32)
    spec = model.window[1]
    with torch.no_grad():
        routed = model(x, mode='predict')
        assert all('routed_subnet' in s for s in routed)
        with model.subnet(spec) as active:
            assert active is spec and model.active_subnet is spec
            fixed = model(x, mode='predict')
        given = model(x, mode='predict', spec=spec)
        with model.backbone.subnet(spec):
            logits = model.head(model.extract_feat(x))
    assert model.active_subnet is model.space.largest  # restored
    for a, b in zip(fixed, given):
        assert 'routed_subnet' not in a and 'routed_subnet' not in b
        torch.testing.assert_close(a.pred_score, b.pred_score)
    torch.testing.assert_close(torch.stack([s.pred_score for s in fixed]),
                               logits.softmax(-1))
    # routing comes back after the block
    again = model(x, mode='predict')
    assert [s.routed_subnet for s in again] == \
        [s.routed_subnet for s in routed]


def test_stage1_dropout_mode_is_the_largest_with_its_dropout():
    torch.manual_seed(0)
    cfg = Config.fromfile('configs/ds_mbnet_digits.py')
    model = build_model_from_cfg(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    largest = model.space.largest
    with torch.no_grad():
        plain = model(x, mode='tensor', spec=largest)
        dropped = model(x, mode='dropout', spec=largest)
        torch.testing.assert_close(dropped, plain)  # eval: no dropout
        model.dropout.train()
        model.dropout.p = 0.9
        assert not torch.allclose(model(x, mode='dropout', spec=largest),
                                  plain, rtol=1e-3, atol=0)


def test_an_unknown_mode_is_refused(gate_model):
    with pytest.raises(RuntimeError, match='sgs_typo'):
        copy.deepcopy(gate_model)(torch.randn(1, 3, 32, 32), mode='sgs_typo')

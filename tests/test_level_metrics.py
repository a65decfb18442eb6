# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Per-level routing and accuracy metrics on hand-made batches."""
import pytest
import torch

from dsnet_mm.engine.loops import SubnetEvalMixin
from dsnet_mm.evaluation import (LevelAccuracy, RoutedImages, RoutingMetric,
                                 RoutingResult)


def sample(level, subnet=None, madds=None, pred=0, gt=0):
    out = dict(pred_label=torch.tensor([pred]), gt_label=torch.tensor([gt]))
    if level is not None:
        out['level'] = level
    if subnet is not None:
        out.update(routed_subnet=subnet, routed_madds=madds)
    return out


def evaluate(metric, samples):
    metric.process({}, samples)
    return metric.compute_metrics(metric.results)


def test_routing_per_level():
    samples = [sample(0, 0, 1e6), sample(0, 0, 1e6), sample(0, 13, 5e6),
               sample(2, 13, 5e6), sample(2, 13, 5e6), sample(3, 6, 3e6)]
    metrics = evaluate(RoutingMetric(), samples)
    assert metrics == {
        'mean_madds': 20e6 / 6, 'subnet_0': 2, 'subnet_6': 1,
        'subnet_13': 3,
        'level_0/images': 3, 'level_0/mean_madds': 7e6 / 3,
        'level_0/subnet_0': 2, 'level_0/subnet_13': 1,
        'level_2/images': 2, 'level_2/mean_madds': 5e6,
        'level_2/subnet_13': 2,
        'level_3/images': 1, 'level_3/mean_madds': 3e6,
        'level_3/subnet_6': 1,
    }


def test_routing_without_levels_reports_no_level_keys():
    metrics = evaluate(RoutingMetric(), [sample(None, 0, 1e6),
                                         sample(None, 2, 3e6)])
    assert metrics == {'mean_madds': 2e6, 'subnet_0': 1, 'subnet_2': 1}


def test_level_accuracy():
    samples = [sample(0, pred=1, gt=1), sample(0, pred=2, gt=1),
               sample(1, pred=3, gt=3), sample(3, pred=0, gt=5),
               sample(None, pred=0, gt=0)]
    assert evaluate(LevelAccuracy(), samples) == {
        'level_0/top1': 50.0, 'level_1/top1': 100.0, 'level_3/top1': 0.0}


class _Window:
    def __init__(self, names):
        self.window = [type('S', (), dict(name=n))() for n in names]


def test_routing_result_is_keyed_by_subnet_name():
    metric = RoutingMetric()
    assert metric.result is None
    samples = [sample(0, 0, 1e6), sample(0, 13, 5e6), sample(2, 13, 5e6)]
    metrics = evaluate(metric, samples)
    result = metric.result
    assert result == RoutingResult(
        RoutedImages(3, 11e6 / 3, dict(subnet_0=1, subnet_13=2)),
        {0: RoutedImages(2, 3e6, dict(subnet_0=1, subnet_13=1)),
         2: RoutedImages(1, 5e6, dict(subnet_13=1))})
    assert result.metrics() == metrics
    # the logged keys, in this order
    assert list(metrics) == [
        'mean_madds', 'subnet_0', 'subnet_13', 'level_0/images',
        'level_0/mean_madds', 'level_0/subnet_0', 'level_0/subnet_13',
        'level_2/images', 'level_2/mean_madds', 'level_2/subnet_13']
    assert evaluate(RoutingMetric(), [sample(0)]) == {}


def test_routing_metric_evaluate_keeps_the_result():
    metric = RoutingMetric()
    metric.process({}, [sample(None, 2, 3e6)])
    assert metric.evaluate(1) == {'routing/mean_madds': 3e6,
                                  'routing/subnet_2': 1}
    assert metric.result.overall == RoutedImages(1, 3e6, dict(subnet_2=1))
    metric.evaluate(1)  # nothing routed since
    assert metric.result is None


def test_dynamic_summary_gathers_the_levels():
    routing = RoutingResult(
        RoutedImages(4, 2e6, dict(subnet_0=3, subnet_3=1)),
        {0: RoutedImages(2, 1e6, dict(subnet_0=2)),
         1: RoutedImages(2, 3e6, dict(subnet_0=1, subnet_3=1))})
    result = {'accuracy/top1': 75.0, 'accuracy/level_0/top1': 100.0,
              'accuracy/level_1/top1': 50.0}
    window = ['subnet_0', 'subnet_1', 'subnet_2', 'subnet_3']
    summary = SubnetEvalMixin._dynamic_summary(_Window(window), routing,
                                               result).to_dict()
    assert summary == {
        'accuracy/top1': 75.0, 'madds': 2e6,
        'routing': dict(subnet_0=3, subnet_1=0, subnet_2=0, subnet_3=1),
        'window': window,
        'levels': {
            0: {'images': 2, 'madds': 1e6, 'accuracy/top1': 100.0,
                'routing': dict(subnet_0=2, subnet_1=0, subnet_2=0,
                                subnet_3=0)},
            1: {'images': 2, 'madds': 3e6, 'accuracy/top1': 50.0,
                'routing': dict(subnet_0=1, subnet_1=0, subnet_2=0,
                                subnet_3=1)},
        },
    }
    routing.levels = {}
    assert 'levels' not in SubnetEvalMixin._dynamic_summary(
        _Window(window), routing, result).to_dict()


def test_dynamic_summary_needs_the_routing_metric():
    with pytest.raises(ValueError, match='needs RoutingMetric'):
        SubnetEvalMixin._dynamic_summary(_Window(['subnet_0']), None,
                                         {'accuracy/top1': 75.0})

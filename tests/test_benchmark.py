# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The inference cache of the sliced ops, and the latency benchmark."""
import copy
import json
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from conftest import randomize_bn, run_tool
from dsnet_mm.analysis import count_complexity, subnet_complexity
from dsnet_mm.analysis.benchmark import (BenchmarkOptions, Timer, benchmark,
                                         check_routing_mix,
                                         equal_madds_spec, measure,
                                         mix_counts, mix_routes,
                                         subnet_runners, summarize)
from dsnet_mm.models.subnet_table import classifier_forward
from dsnet_mm.static.cached import CachedStatic
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.ops import (DSBatchNorm2d, DSConv2d, DSLinear, inference_cache,
                          unfolded_bn)
from dsnet_mm.ops import weight_cache

CONFIG = 'configs/ds_mbnet_digits.py'
GATE_CONFIG = 'configs/ds_mbnet_digits_gate.py'


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    cfg = Config.fromfile(CONFIG)
    return randomize_bn(build_model_from_cfg(cfg)).eval()


@pytest.fixture(scope='module')
def gate_model():
    """The digits gate model on a window of four (subnet_10..13)."""
    torch.manual_seed(0)
    cfg = Config.fromfile(GATE_CONFIG)
    cfg.model.stage1_checkpoint = None
    cfg.model.backbone.gate.window = (10, 4)
    return randomize_bn(build_model_from_cfg(cfg)).eval()


# --- the inference cache -------------------------------------------------
def test_cached_conv_follows_every_weight_change():
    torch.manual_seed(0)
    conv = DSConv2d(8, 6, 3, bias=True).eval()
    x = torch.randn(2, 5, 7, 7)

    def expected():
        return F.conv2d(x, conv.weight[:4, :5], conv.bias[:4], 1, 1)

    with torch.no_grad(), inference_cache(conv):
        out = conv(x, 4)
        torch.testing.assert_close(out, expected())
        # the cached weight is a contiguous copy, not the strided view
        (_, (weight, _, _)), = conv._cache.values()
        assert weight.is_contiguous()
        assert weight.data_ptr() != conv.weight.data_ptr()
        conv.weight.mul_(2)  # an in-place step (optimizer, EMA)
        torch.testing.assert_close(conv(x, 4), expected())
        conv.load_state_dict({'weight': torch.randn(6, 8, 3, 3),
                              'bias': torch.randn(6)})
        torch.testing.assert_close(conv(x, 4), expected())
    conv.double()
    with torch.no_grad(), inference_cache(conv):
        conv(x.double(), 4)
        conv.double()  # a move while caching drops the cache
        assert not conv._cache
        torch.testing.assert_close(conv(x.double(), 4),
                                   F.conv2d(x.double(), conv.weight[:4, :5],
                                            conv.bias[:4], 1, 1))


def test_cache_is_bounded_and_off_in_training_or_with_gradients():
    conv = DSConv2d(8, 8, 1).eval()
    with torch.no_grad(), inference_cache(conv):
        for c in range(1, 9):
            conv(torch.randn(1, c, 2, 2))
        assert len(conv._cache) == conv.max_cached
    assert not conv._cache and not conv.caching
    with torch.no_grad():  # outside the block: nothing cached
        conv(torch.randn(1, 3, 2, 2))
    assert not conv._cache
    conv.caching = True
    # eval with gradients wanted (e.g. BN frozen, weights trained): views
    x = torch.randn(2, 4, 3, 3)
    conv(x, 5).sum().backward()
    assert conv.weight.grad[:5, :4].abs().sum() > 0
    assert conv.weight.grad[5:].abs().sum() == 0
    assert not conv._cache
    conv.train()
    with torch.no_grad():
        conv(x, 5)
    assert not conv._cache


def test_cached_weight_takes_the_input_memory_format():
    conv = DSConv2d(8, 8, 3).eval()
    x = torch.randn(2, 6, 5, 5).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), inference_cache(conv):
        out = conv(x, 4)
        (_, (weight, _, _)), = conv._cache.values()
    assert weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        out, F.conv2d(x.contiguous(), conv.weight[:4, :6], None, 1, 1))


def test_folded_conv_bn_follows_changes_and_counts_every_bn():
    torch.manual_seed(0)
    conv = DSConv2d(8, 6, 3).eval()
    bn = randomize_bn(torch.nn.ModuleList([DSBatchNorm2d(6, 3)]))[0].eval()
    x = torch.randn(2, 5, 7, 7)
    with torch.no_grad(), inference_cache(conv), inference_cache(bn):
        for step in range(2):
            expected = F.batch_norm(
                F.conv2d(x, conv.weight[:4, :5], None, 1, 1),
                bn.running_mean[2, :4], bn.running_var[2, :4],
                bn.weight[:4], bn.bias[:4], False, 0.0, bn.eps)
            torch.testing.assert_close(conv.forward_bn(x, bn, 2, 4), expected)
            bn.running_var[2].mul_(2)  # recalibrated statistics
        # one folded entry; the BN itself was skipped
        (_, (weight, bias, _)), = conv._cache.values()
        assert not bn._cache and bias.shape == (4, )
        model = torch.nn.Module()
        model.conv, model.bn = conv, bn
        cost = count_complexity(
            model, lambda: conv.forward_bn(x[:1], bn, 2, 4))
    assert cost['params'] == 4 * 5 * 9 + 2 * 4
    assert bn.fold  # restored after counting


class _ConvNet(torch.nn.Module):
    """A model holding one sliced conv, which may fail on request."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = DSConv2d(4, 4, 1).eval()
        self.fail = False

    def forward(self, x):
        out = self.conv(x, 3)
        if self.fail:
            raise RuntimeError('failed forward')
        return out


def test_checked_spans_check_once_and_see_changes_between_calls(monkeypatch):
    torch.manual_seed(0)
    net = _ConvNet().eval()
    x = torch.randn(1, 4, 2, 2)
    stamps, stamp = [], weight_cache._stamp
    monkeypatch.setattr(weight_cache, '_stamp',
                        lambda ops: stamps.append(1) or stamp(ops))
    with torch.no_grad(), inference_cache(net) as cache:
        net(x)  # builds the entry
        built = len(stamps)
        for _ in range(3):
            net(x)
        assert len(stamps) == built  # hits inside a span are not re-checked
        net.conv.weight.mul_(-1)  # between calls: the next span drops it
        torch.testing.assert_close(
            net(x), F.conv2d(x, net.conv.weight[:3]))
        # a call outside any span checks its entry itself
        net.conv.weight.mul_(2)
        torch.testing.assert_close(
            net.conv(x, 3), F.conv2d(x, net.conv.weight[:3]))
        # spans nest: a call of the model inside an explicit span
        with cache.checked():
            net(x)
            assert cache.in_span
        assert not cache.in_span
        # a failed forward still closes its span
        net.fail = True
        with pytest.raises(RuntimeError, match='failed forward'):
            net(x)
        assert not cache.in_span
    assert not net._forward_hooks and not net._forward_pre_hooks
    assert not net.conv._cache and not net.conv.caching


def test_checked_span_leaves_training_and_gradients_uncached():
    net = _ConvNet().train()
    x = torch.randn(2, 4, 2, 2)
    with inference_cache(net):
        net(x).sum().backward()  # training: views, gradients flow
        assert not net.conv._cache
        assert net.conv.weight.grad[:3].abs().sum() > 0
        assert net.conv.weight.grad[3:].abs().sum() == 0
        net.eval()
        net(x)  # eval but gradients wanted for the weight: still views
        assert not net.conv._cache and not net.conv.inference()


def test_writes_through_data_are_seen_outside_the_cache():
    """mmengine's EMA writes the teacher's weights through ``.data``, which
    no version counter sees: without the opt-in block nothing is cached."""
    conv = DSConv2d(4, 4, 1).eval()
    x = torch.randn(1, 4, 2, 2)
    with torch.no_grad():
        conv(x)
        conv.weight.data.copy_(torch.zeros(4, 4, 1, 1))
        assert conv(x).abs().sum() == 0


def test_cached_bn_and_linear_follow_changes():
    torch.manual_seed(0)
    bn = randomize_bn(torch.nn.ModuleList([DSBatchNorm2d(6, 3)]))[0].eval()
    fc = DSLinear(6, 4).eval()
    x = torch.randn(2, 5, 3, 3)
    with torch.no_grad(), inference_cache(bn), inference_cache(fc):
        first = bn(x, 1)
        bn.running_mean[1].add_(1.0)  # e.g. recalibration
        torch.testing.assert_close(bn(x, 1), first - bn.weight[:5, None, None]
                                   * torch.rsqrt(bn.running_var[1, :5, None,
                                                                None] + 1e-5))
        assert len(bn._cache) == 1
        v = torch.randn(3, 5)
        fc(v)
        fc.weight.zero_()
        torch.testing.assert_close(fc(v), fc.bias.expand(3, 4))


def _uncached(model, x, spec):
    with torch.no_grad(), model.backbone.subnet(spec):
        return classifier_forward(model, x)


@pytest.mark.parametrize('channels_last', [False, True])
def test_cached_subnet_runs_its_static_network_and_equals_uncached(
        model, channels_last):
    spec = model.backbone.space[3]
    x = torch.randn(1, 3, 32, 32)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = _uncached(model, x, spec)
    with torch.no_grad(), inference_cache(model) as cache, \
            model.backbone.subnet(spec):
        for _ in range(2):  # built once, then reused
            torch.testing.assert_close(model(x), expected)
        plain, = cache._static.values()
        assert isinstance(plain, CachedStatic)
        conv = plain.features[0][0]  # the stem conv, in the input's format
        assert conv.weight.is_contiguous(
            memory_format=torch.channels_last if channels_last
            else torch.contiguous_format)
        # outside a span (a call of the backbone alone) the ops run
        assert model.backbone.cached_static(x, spec) is None
    assert model.backbone.cached_static(x, spec) is None


def test_cached_static_network_follows_every_weight_change(model):
    spec = model.backbone.space[3]
    x = torch.randn(2, 3, 32, 32)
    pw = model.backbone.layers[-1][-1].conv_pw
    bn = model.backbone.layers[-1][-1].bn2
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad(), inference_cache(model) as cache, \
                model.backbone.subnet(spec):
            model(x)
            pw.weight.mul_(-1)  # an in-place step between calls
            torch.testing.assert_close(model(x), _uncached(model, x, spec))
            bn.running_var[spec.stats].mul_(3)  # recalibrated statistics
            torch.testing.assert_close(model(x), _uncached(model, x, spec))
            model.load_state_dict(state)
            torch.testing.assert_close(model(x), _uncached(model, x, spec))
            built = next(iter(cache._static.values()))
            model.float()  # a conversion: rebuilt from the converted tensors
            model(x)
            assert next(iter(cache._static.values())) is not built
            model.train()  # training: the ops run, sliced views
            with cache.checked():
                assert model.backbone.cached_static(x, spec) is None
            model.eval()
    finally:
        model.load_state_dict(state)
        model.eval()


def test_complexity_counted_in_a_span_sees_the_ops(model):
    """Counting inside a call of the model (``window_madds`` on a first
    ``predict``) must watch the DS layers, not the static network."""
    spec = model.backbone.space[3]
    expected = subnet_complexity(model, [spec], (3, 32, 32))[0]['madds']
    with torch.no_grad(), inference_cache(model) as cache, cache.checked():
        model(torch.randn(1, 3, 32, 32))
        assert subnet_complexity(model, [spec],
                                 (3, 32, 32))[0]['madds'] == expected


def test_layer_by_layer_tool_entered_in_a_span_stops_the_static_network(
        model):
    spec = model.backbone.space[3]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), inference_cache(model) as cache, cache.checked():
        assert model.backbone.cached_static(x, spec) is not None
        with unfolded_bn(model):
            assert model.backbone.cached_static(x, spec) is None
    with torch.no_grad(), unfolded_bn(model), inference_cache(model) as cache:
        with cache.checked():  # watched before the block opened
            assert model.backbone.cached_static(x, spec) is None
        assert cache.model is model


def test_a_cache_block_hears_only_its_own_models_ops(model):
    """Another model's moves and mode switches leave a block's checks as
    they were; its own ops' reach it."""
    other = copy.deepcopy(model)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), inference_cache(model) as cache:
        model(x)
        tensors, modes = cache._tensors, cache._eval
        assert tensors is not None and modes is True
        other.float().train().eval()
        assert cache._tensors is tensors and cache._eval is modes
        model.train()
        assert cache._eval is None
        model.eval()
        model.float()
        assert cache._tensors is None
        torch.testing.assert_close(
            model(x), _uncached(model, x, model.backbone.active_subnet))


def test_cached_buckets_run_static_parts_and_equal_uncached(gate_model):
    model = gate_model
    x = torch.randn(6, 3, 32, 32)
    routes = torch.tensor([3, 0, 3, 1, 0, 3])
    with torch.no_grad():
        expected, gate_logits, _ = model.forward_dynamic(x, 'bucket', routes)
        with inference_cache(model) as cache, cache.checked():
            logits, cached_gate, choice = model.forward_dynamic(
                x, 'bucket', routes)
            assert torch.equal(choice, routes)
            torch.testing.assert_close(logits, expected)
            torch.testing.assert_close(cached_gate, gate_logits)
            # members 0, 1 and 3 ran (member 0 also before the gate)
            assert len(cache._static) == 3
        post = model.backbone.layers[-1][-1].conv_pw
        with inference_cache(model) as cache:
            with cache.checked():
                model.forward_dynamic(x, 'bucket', routes)
            post.weight.mul_(-1)
            try:
                with cache.checked():
                    logits = model.forward_dynamic(x, 'bucket', routes)[0]
                torch.testing.assert_close(
                    logits, model.forward_dynamic(x, 'bucket', routes)[0])
            finally:
                post.weight.mul_(-1)


def test_routes_override_the_gate_and_are_checked(gate_model):
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        for mode in ('bucket', 'slice', 'mask'):
            _, _, choice = gate_model.forward_dynamic(
                x, mode, torch.tensor([2, 0, 2]))
            assert choice.tolist() == [2, 0, 2]
        for bad in (torch.tensor([0, 4, 1]), torch.tensor([0, 1]),
                    torch.tensor([0., 1., 2.]), [0, 1, 2]):
            with pytest.raises(ValueError, match='routes must be a long '
                               'tensor of 3 window positions in 0..3'):
                gate_model.forward_dynamic(x, 'bucket', bad)


# --- the benchmark ---------------------------------------------------------
@pytest.mark.parametrize('mix, n, counts', [
    ([0.5, 0, 0, 0.5], 1, [1, 0, 0, 0]),
    ([0.5, 0, 0, 0.5], 7, [4, 0, 0, 3]),
    ([0.5, 0, 0, 0.5], 64, [32, 0, 0, 32]),
    ([0.1, 0.2, 0.3, 0.4], 8, [1, 2, 2, 3]),
    ([1 / 3, 1 / 3, 1 / 3], 32, [11, 11, 10]),
    ([0.25, 0.25, 0.25, 0.25], 3, [1, 1, 1, 0]),
])
def test_routing_mix_assigns_exactly_the_requested_counts(mix, n, counts):
    assert mix_counts(mix, n) == counts
    routes = mix_routes(mix, n)
    assert torch.bincount(routes, minlength=len(mix)).tolist() == counts
    assert torch.equal(routes, mix_routes(mix, n))  # deterministic
    if n == 64:  # spread over the batch, not in blocks
        assert 0 < routes[:32].sum() < 32 * 3


@pytest.mark.parametrize('mix, message', [
    ([0.5, 0, 0, 0.4], 'window size 4: subnet_10, subnet_11, subnet_12, '
     r'subnet_13\), summing to 1 within 1e-6; got 4 fractions .* summing '
     'to 0.9'),
    ([0.5, 0.5], 'window size 4.*got 2 fractions .* summing to 1'),
    ([1.5, -0.5, 0, 0], 'one fraction >= 0'),
])
def test_benchmark_refuses_a_routing_mix_that_does_not_fit_the_window(
        gate_model, mix, message):
    with pytest.raises(ValueError, match=r'routing_mix \(--routing-mix\) '
                       'must give one fraction'):
        check_routing_mix(mix, gate_model.window)
    with pytest.raises(ValueError, match=message):
        benchmark(gate_model, [], (3, 32, 32), torch.device('cpu'),
                  BenchmarkOptions(['dynamic'], [1], routing_mix=mix))


@pytest.mark.parametrize('key', [0, 9])
def test_every_mode_computes_the_same_logits(model, key):
    spec = model.backbone.space[key]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        with model.backbone.subnet(spec):
            expected = classifier_forward(model, x)
    with torch.no_grad(), inference_cache(model):  # as the benchmark runs
        for channels_last in (False, True):
            runners = subnet_runners(
                model, spec, ['slice', 'static', 'mask', 'index'],
                x.contiguous(memory_format=torch.channels_last)
                if channels_last else x)
            assert sorted(runners) == ['index', 'mask', 'slice', 'static']
            for mode, run in runners.items():
                torch.testing.assert_close(
                    run(), expected, atol=1e-5, rtol=1e-5, msg=mode)


def test_a_pre_empted_warm_up_call_does_not_shorten_the_samples():
    asked = []

    def timer(run, calls):
        asked.append(calls)
        # the runner takes 2 ms; the last warm-up round is pre-empted
        return 25.0 if len(asked) == 3 else 2.0

    times = measure({'fast': lambda: None}, timer, warmup=3, repeats=2,
                    min_sample_ms=20)
    # samples sized from the fastest warm-up round, not from the last one
    assert asked == [1, 10, 10, 10, 10]
    assert times == {'fast': [2.0, 2.0]}


def test_short_calls_are_averaged_into_samples():
    calls = {'fast': 0, 'slow': 0}

    def runner(name, ms):
        def run():
            calls[name] += 1
            end = time.perf_counter() + ms / 1e3
            while time.perf_counter() < end:
                pass
        return run

    times = measure({'fast': runner('fast', 2), 'slow': runner('slow', 30)},
                    Timer(torch.device('cpu')), warmup=3, repeats=3,
                    min_sample_ms=20)
    # one call in the first warm-up round, then (in the warm-up and in
    # every sample) about 20 ms of 2 ms calls (without averaging a sample
    # would be one call). A busy-wait call lasts at least its time; on a
    # loaded machine one can be pre-empted for longer, so the upper bounds
    # on times hold for the median sample only.
    assert 3 + 3 * 2 <= calls['fast'] <= 1 + 2 * 10 + 3 * 10
    assert calls['slow'] == 3 + 3
    assert all(t >= 2 for t in times['fast']), times
    assert all(t >= 30 for t in times['slow']), times
    assert sorted(times['fast'])[1] < 10, times
    assert sorted(times['slow'])[1] < 45, times


def test_equal_madds_spec_hits_the_target(model):
    space = model.backbone.space
    rows = {r['name']: r['madds'] for r in subnet_complexity(
        model, [space[3], space[4]], (3, 32, 32))}
    target = (rows['subnet_3'] + rows['subnet_4']) / 2
    spec, madds = equal_madds_spec(model, target, (3, 32, 32))
    assert abs(madds - target) / target < 0.01
    assert space[3]['stage5'] <= spec['stage5'] <= space[4]['stage5']
    assert spec.stats == 3 and spec.position is None


def test_benchmark_rows_and_summary(model):
    rows = benchmark(model, [model.backbone.space[0],
                             model.backbone.space[13]],
                     (3, 32, 32), torch.device('cpu'),
                     BenchmarkOptions(['slice', 'static', 'mask', 'index'],
                                      [1, 2], warmup=0, repeats=2))
    keys = {(r['mode'], r['subnet'], r['batch_size']) for r in rows}
    # mask brings the full-width reference along, and masks nothing there
    assert ('slice', 'largest', 2) in keys and ('mask', 'largest', 2) \
        not in keys
    # 2 batch sizes x (2 sub-networks x 4 modes + the largest x 3)
    assert len(rows) == 2 * (2 * 4 + 3)
    for r in rows:
        assert set(r) == {'mode', 'subnet', 'batch_size', 'madds',
                          'median_ms', 'p90_ms', 'backend'}
        assert r['backend'] == 'torch'
        assert 0 < r['median_ms'] <= r['p90_ms']
    s = summarize(rows)['2']
    assert set(s) == {'slice_over_static', 'index_over_slice',
                      'mask_speedup', 'scaling', 'static_scaling',
                      'scaling_over_static'}
    assert s['scaling']['narrowest'] == 'subnet_0'
    assert s['scaling']['madds_ratio'] > 3


def test_dynamic_rows_route_real_images(gate_model):
    images = torch.randn(5, 3, 32, 32)
    rows = benchmark(gate_model, [], (3, 32, 32), torch.device('cpu'),
                     BenchmarkOptions(['dynamic'], [8], warmup=0, repeats=1),
                     images=images)
    by = {(r['mode'], r['subnet']): r for r in rows}
    assert set(by) == {('dynamic', 'routed'), ('static', 'equal_madds'),
                       ('static', 'routed_limit')}
    routed = by[('dynamic', 'routed')]
    assert sum(routed['routing'].values()) == 8
    assert by[('static', 'routed_limit')]['routing'] == routed['routing']
    assert abs(by[('static', 'equal_madds')]['madds'] - routed['madds']) \
        / routed['madds'] < 0.02
    assert {'dynamic_throughput_ratio', 'dynamic_over_routed_limit'} <= \
        set(summarize(rows)['8'])
    with pytest.raises(ValueError, match='mode dynamic needs a gated'):
        benchmark(build_model_from_cfg(Config.fromfile(CONFIG)), [],
                  (3, 32, 32), torch.device('cpu'),
                  BenchmarkOptions(['dynamic'], [1]))


def test_dynamic_rows_with_a_routing_mix_on_torch_and_ort(gate_model):
    rows = benchmark(gate_model, [], (3, 32, 32), torch.device('cpu'),
                     BenchmarkOptions(['dynamic'], [1, 6], warmup=0,
                                      repeats=1, min_sample_ms=0,
                                      backends=('torch', 'ort'),
                                      routing_mix=[0.5, 0, 0, 0.5]))
    by = {(r['mode'], r['subnet'], r['batch_size'], r['backend']): r
          for r in rows}
    assert len(by) == len(rows) == 2 * 3 * 2
    for bs, counts in ((1, [1, 0, 0, 0]), (6, [3, 0, 0, 3])):
        for backend in ('torch', 'ort'):
            routed = by[('dynamic', 'routed', bs, backend)]
            assert list(routed['routing'].values()) == counts
            assert routed['routing_mix'] == [0.5, 0, 0, 0.5]
        for name in ('routed', 'equal_madds'):
            assert by[('dynamic' if name == 'routed' else 'static', name, bs,
                       'ort')]['max_rel_diff'] < 1e-5
    s = summarize(rows)['6']
    assert {'dynamic_throughput_ratio', 'dynamic_over_routed_limit'} <= \
        set(s) and set(s['ort']) == {'dynamic_throughput_ratio',
                                     'dynamic_over_routed_limit',
                                     'speedup_over_torch'}


def test_compiled_rows_run_the_compiled_networks(model, monkeypatch):
    """``compile=True`` times the torch.compile'd static networks, and the
    cache's (here torch.compile is a spy: compiling takes minutes)."""
    compiled = []

    def spy(module, **kwargs):
        compiled.append(type(module).__name__)
        return module

    monkeypatch.setattr(torch, 'compile', spy)
    rows = benchmark(model, [model.backbone.space[0]], (3, 32, 32),
                     torch.device('cpu'),
                     BenchmarkOptions(['slice', 'static'], [2], warmup=0,
                                      repeats=1, min_sample_ms=0,
                                      compile=True))
    by = {(r['mode'], r['backend']): r for r in rows}
    assert set(by) == {(m, b) for m in ('slice', 'static')
                       for b in ('torch', 'inductor')}
    for mode in ('slice', 'static'):
        assert by[(mode, 'inductor')]['compile_s'] > 0
        assert by[(mode, 'inductor')]['max_rel_diff'] < 1e-6
    # the static network, and the cache's (its stem and body)
    assert sorted(compiled) == ['Sequential', 'StaticNet']
    assert 'speedup_over_torch' in summarize(rows)['2']['inductor']


def test_benchmark_tool_writes_json_and_plot(tmp_path):
    out = tmp_path / 'bench.json'
    proc = run_tool('tools/analysis/benchmark.py', CONFIG, '--shape', '32',
                    '32', '--subnets', '0,largest', '--batch-sizes', '2',
                    '--modes', 'slice', 'static', '--repeats', '2',
                    '--warmup', '0', '--json', str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result['device'].startswith('cpu')
    assert result['allocator'].startswith('glibc malloc, freed memory reused')
    assert {(r['mode'], r['subnet']) for r in result['results']} == {
        (m, s) for m in ('slice', 'static') for s in ('subnet_0', 'largest')}
    assert (tmp_path / 'bench.png').stat().st_size > 1000


@pytest.mark.parametrize('args, message', [
    (['--modes', 'slice', 'warp'], "invalid choice: 'warp'"),
    (['--subnets', '0,14'], 'outside 0..13'),
    (['--subnets', 'tiny'], "unknown sub-network 'tiny'"),
    (['--batch-sizes', '0'], '--batch-sizes: the value must be an int >= 1, got 0'),
    (['--modes', 'dynamic'], 'mode dynamic needs a gated model'),
])
def test_benchmark_tool_refuses_nonsense(args, message):
    proc = run_tool('tools/analysis/benchmark.py', CONFIG, *args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-2000:]


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine '
                    'without a CUDA GPU to check the refusal')
def test_benchmark_tool_refuses_cuda_without_gpu():
    proc = run_tool('tools/analysis/benchmark.py', CONFIG, '--device', 'cuda')
    assert proc.returncode != 0
    assert 'torch sees no CUDA GPU' in proc.stderr


# a forward pass whose activations (48 MiB) are above glibc's mmap threshold
FAULTS_PER_FORWARD = """
import resource, sys, torch
from dsnet_mm.deploy import reuse_freed_memory
if sys.argv[1] == 'reuse':
    assert reuse_freed_memory()
net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1),
                          torch.nn.ReLU(), torch.nn.Conv2d(12, 12, 3, padding=1))
x = torch.randn(1, 3, 1024, 1024)
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.no_grad():
        net(x)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='mallopt is glibc (Linux)')
def test_reused_memory_is_not_page_faulted_in_every_forward():
    faults = {}
    for allocator in ('system', 'reuse'):
        proc = subprocess.run(
            [sys.executable, '-c', FAULTS_PER_FORWARD, allocator],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, 'OMP_NUM_THREADS': '1'})
        assert proc.returncode == 0, proc.stderr[-2000:]
        faults[allocator] = [int(n) for n in proc.stdout.split()]
    # every forward maps its large activations afresh: one fault per 4 KiB
    # (one 12x1024x1024 float32 activation is 12,288 pages)
    assert min(faults['system'][1:]) > 20000, faults
    # reused: the heap settles within the first forwards (the second may
    # still grow it by one activation where the first one's layout left a
    # hole too small), then nothing is faulted in again
    assert sum(faults['reuse'][1:]) < min(faults['system'][1:]), faults
    assert max(faults['reuse'][3:]) < 200, faults

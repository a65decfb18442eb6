# Copyright (c) dsnet_mm contributors. All rights reserved.
"""get_flops.py reproduces the reference MAdds table of DS-MobileNetV1."""
import json

import torch
import torch.nn as nn

from conftest import run_tool
from dsnet_mm.analysis import count_complexity

# README of the reference release (docs/reference/dsnet.md, "Released
# checkpoint"), in millions
REFERENCE_MADDS = [133, 153, 175, 200, 226, 255, 286, 319, 355, 393, 433,
                   475, 519, 565]


def test_reference_table_at_224():
    proc = run_tool('tools/analysis/get_flops.py',
                    'configs/ds_mbnet_imagenet.py', '--json')
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    madds = [s['madds'] for s in report['subnets']]
    assert [s['index'] for s in report['subnets']] == list(range(14))
    for got, ref in zip(madds, REFERENCE_MADDS):
        assert abs(got / 1e6 - ref) <= 0.5, (got, ref)
    assert abs(report['largest']['madds'] / 1e6 - 820) <= 1.0
    params = [s['params'] for s in report['subnets']]
    assert params == sorted(params) and params[0] < params[-1] < \
        report['largest']['params']


def test_table_output_lists_every_subnet():
    proc = run_tool('tools/analysis/get_flops.py',
                    'configs/ds_mbnet_digits.py', '--shape', '32', '32')
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert 'stem/stage1/stage2/stage3/stage4/stage5' in lines[1]
    rows = lines[2:]
    assert [r.split()[0] for r in rows] == [str(k) for k in range(14)] + [
        'largest']


def test_counter_rules_on_a_plain_network():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                        nn.BatchNorm2d(8),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 4))
    cost = count_complexity(net, lambda: net(torch.zeros(2, 3, 5, 5)))
    conv1 = 25 * 8 * 3 * 9
    dw = 25 * 8 * 9
    pool = 8 * 25
    assert cost['madds'] == conv1 + dw + pool + 8 * 4
    assert cost['params'] == sum(p.numel() for p in net.parameters())

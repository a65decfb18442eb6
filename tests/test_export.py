# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Static export of a sub-network: plain torch, torch.export and ONNX."""
import json
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from conftest import randomize_bn, run_tool
from dsnet_mm.deploy import static_subnet
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.ops import DSBatchNorm2d

CONFIG = 'configs/ds_mbnet_digits.py'


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return randomize_bn(build_model_from_cfg(Config.fromfile(CONFIG))).eval()


@pytest.mark.parametrize('key', [0, 7, 13, 'largest'])
def test_static_network_equals_the_sliced_subnet(model, key):
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad(), model.backbone.subnet(key) as spec:
        static = static_subnet(model, spec)
        torch.testing.assert_close(static(x), model(x), atol=1e-5, rtol=1e-5)
    # plain layers at the sub-network's widths, BN folded away
    assert not any(isinstance(m, DSBatchNorm2d) for m in static.modules())
    assert static.head.fc.in_features == spec['stage5']


def test_export_tool_writes_pt2_and_onnx_that_match(model, tmp_path):
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'ckpt.pth')
    proc = run_tool('tools/export_subnet.py', CONFIG,
                    str(tmp_path / 'ckpt.pth'), '--subnet', '5', '--out',
                    str(tmp_path / 'out'), '--onnx', '--shape', '32', '32')
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / 'out' / 'subnet_5.json').read_text())
    assert report['pt2_max_diff'] < 1e-4 and report['onnx_max_diff'] < 1e-4
    assert report['normalisation']['mean'] == [57.0] * 3
    # the exported file runs without dsnet_mm or mmpretrain
    code = (
        'import sys, torch\n'
        f"m = torch.export.load({str(tmp_path / 'out' / 'subnet_5.pt2')!r})"
        '.module()\n'
        'print(tuple(m(torch.randn(2, 3, 32, 32)).shape))\n'
        "assert not any(k.startswith(('dsnet_mm', 'mmpretrain')) "
        'for k in sys.modules)\n')
    run = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == '(2, 10)'


def test_export_tool_refuses_an_unknown_subnet(model, tmp_path):
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'ckpt.pth')
    proc = run_tool('tools/export_subnet.py', CONFIG,
                    str(tmp_path / 'ckpt.pth'), '--subnet', '14', '--out',
                    str(tmp_path / 'out'))
    assert proc.returncode != 0
    assert 'sub-network index 14 is outside 0..13' in proc.stderr

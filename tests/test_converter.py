# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The reference DS-Net checkpoint layout converts onto DS-MobileNetV1."""
import argparse

import pytest
import torch
from mmengine.config import Config

from conftest import run_tool
from dsnet_mm.converters import convert_official_dsnet
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.ops import DSBatchNorm2d

CONFIG = 'configs/ds_mbnet_digits.py'


def build(seed):
    torch.manual_seed(seed)
    model = build_model_from_cfg(Config.fromfile(CONFIG)).eval()
    specs = [*model.backbone.space.subnets, model.backbone.space.largest]
    for name, m in model.backbone.named_modules():
        if not isinstance(m, DSBatchNorm2d):
            continue
        with torch.no_grad():
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
            # the reference keeps statistics per width: rows of sub-networks
            # that run this BN at the same width hold the same statistics
            group = _group(model.backbone, name)
            for w in {s[group] for s in specs}:
                mean = torch.randn(w) * 0.3
                var = torch.rand(w) + 0.5
                for s in specs:
                    if s[group] == w:
                        m.running_mean[s.stats, :w] = mean
                        m.running_var[s.stats, :w] = var
    return model


def _group(backbone, bn_name):
    if bn_name.startswith('stem'):
        return 'stem'
    _, s, j, which = bn_name.split('.')
    block = backbone.layers[int(s)][int(j)]
    return block.in_group if which == 'bn1' else block.group


def to_reference(model):
    """Write the model in the reference layout (the inverse mapping)."""
    bb = model.backbone
    specs = [*bb.space.subnets, bb.space.largest]
    ref = {'conv_stem.weight': bb.stem.conv.weight}

    def bn(prefix, m, group):
        widths = sorted({s[group] for s in specs})
        for i, w in enumerate(widths):
            row = next(s.stats for s in specs if s[group] == w)
            ref[f'{prefix}aux_bn.{i}.running_mean'] = m.running_mean[row, :w]
            ref[f'{prefix}aux_bn.{i}.running_var'] = m.running_var[row, :w]
            ref[f'{prefix}aux_bn.{i}.num_batches_tracked'] = torch.tensor(7)
        ref[f'{prefix}aux_bn.{len(widths) - 1}.weight'] = m.weight
        ref[f'{prefix}aux_bn.{len(widths) - 1}.bias'] = m.bias

    bn('bn1.', bb.stem.bn, 'stem')
    for s, blocks in enumerate(bb.layers):
        for j, b in enumerate(blocks):
            p = f'blocks.{s}.first_block.' if j == 0 else \
                f'blocks.{s}.residual_blocks.{j - 1}.'
            ref[p + 'conv_dw.weight'] = b.conv_dw.weight
            bn(p + 'bn1.', b.bn1, b.in_group)
            for part in ('conv_reduce', 'conv_expand'):
                ref[f'{p}gate.{part}.weight'] = getattr(b.se, part).weight
                ref[f'{p}gate.{part}.bias'] = getattr(b.se, part).bias
            ref[p + 'conv_pw.weight'] = b.conv_pw.weight
            bn(p + 'bn2.', b.bn2, b.group)
    ref['classifier.weight'] = model.head.fc.weight
    ref['classifier.bias'] = model.head.fc.bias
    return {'module.' + k: v.detach().clone() for k, v in ref.items()}


def test_round_trip_gives_the_same_model(tmp_path):
    source = build(0)
    ref = to_reference(source)
    torch.save(dict(state_dict=ref, state_dict_ema=ref), tmp_path / 'ds.pth')
    proc = run_tool('tools/convert/official_dsnet.py',
                    str(tmp_path / 'ds.pth'), str(tmp_path / 'out.pth'),
                    '--config', CONFIG, '--ema')
    assert proc.returncode == 0, proc.stderr[-3000:]
    converted = torch.load(tmp_path / 'out.pth', weights_only=True)
    target = build(1)
    target.load_state_dict(converted['state_dict'], strict=False)
    src_state = source.state_dict()
    for k, v in converted['state_dict'].items():
        if not k.endswith('num_batches_tracked'):
            assert torch.equal(v, src_state[k]), k
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for spec in [0, 5, 13, 'largest']:
            with source.backbone.subnet(spec), target.backbone.subnet(spec):
                torch.testing.assert_close(target(x), source(x))


def test_missing_reference_keys_are_named():
    ref = to_reference(build(0))
    del ref['module.blocks.3.first_block.conv_pw.weight']
    del ref['module.bn1.aux_bn.0.running_var']
    with pytest.raises(KeyError) as err:
        convert_official_dsnet(ref, build(1).backbone)
    assert 'blocks.3.first_block.conv_pw.weight' in str(err.value)
    assert 'bn1.aux_bn.0.running_var' in str(err.value)


def test_converter_refuses_a_foreign_pickle_unless_trusted(tmp_path):
    ref = to_reference(build(0))
    # a global outside the weights-only allow-list (the reference release
    # stores its training args this way)
    torch.save(dict(state_dict=ref, args=argparse.Namespace(lr=0.1)),
               tmp_path / 'ds.pth')
    args = [str(tmp_path / 'ds.pth'), str(tmp_path / 'out.pth'), '--config',
            CONFIG]
    proc = run_tool('tools/convert/official_dsnet.py', *args)
    assert proc.returncode != 0
    assert 'refused by weights-only loading' in proc.stderr
    assert not (tmp_path / 'out.pth').exists()
    proc = run_tool('tools/convert/official_dsnet.py', *args,
                    '--trust-checkpoint')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / 'out.pth').exists()

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""DS-ViT sub-networks as plain torch networks: static and indexed equal
the sliced forward, for non-uniform specs, idle readings and the gate."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS

from dsnet_mm.analysis import count_complexity, subnet_complexity
from dsnet_mm.analysis.index_baseline import indexed_subnet
from dsnet_mm.deploy import static_subnet
from test_ds_vit import ARCH, LADDER, MIXED, images

init_default_scope('mmpretrain')


def build(**backbone):
    torch.manual_seed(0)
    backbone = dict(dict(type='DSViT', arch=ARCH, img_size=16, patch_size=4,
                         subnets=LADDER), **backbone)
    model = MODELS.build(dict(
        type='DSImageClassifier', backbone=backbone,
        head=dict(type='DSLinearClsHead', num_classes=5, in_channels=32)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'ln' not in name:
                p.normal_(0, 0.2)
    return model.eval()


CASES = [
    dict(),
    dict(idle_head=True),
    dict(subnets=[dict(MIXED, **{'blocks.2.heads': 0, 'blocks.1.mlp': 0}),
                  MIXED], idle_branches=True),
    dict(fixed_blocks=1, gate=dict(block=0, window=(0, 3), tokens='mean')),
    # per-channel layer scales (randomised by build): in the static form too
    dict(layer_scale_init_value=0.1),
]


@pytest.mark.parametrize('backbone', CASES)
def test_static_and_indexed_vit_equal_the_sliced_forward(backbone):
    model = build(**backbone)
    x = images(3)
    for spec in model.backbone.space.subnets:
        with torch.no_grad():
            with model.backbone.subnet(spec):
                sliced = model(x)
            static = static_subnet(model, spec)
            torch.testing.assert_close(static(x), sliced, atol=1e-5,
                                       rtol=1e-5)
            torch.testing.assert_close(indexed_subnet(model, spec)(x),
                                       sliced, atol=1e-5, rtol=1e-5)
        # the plain network costs what the sliced one is counted at
        plain = count_complexity(static, lambda: static(x[:1]))['madds']
        assert plain == subnet_complexity(model, [spec],
                                          (3, 16, 16))[0]['madds']


def test_static_vit_exports_to_onnx(tmp_path):
    onnxruntime = pytest.importorskip('onnxruntime')
    model = build()
    spec = model.backbone.space.smallest
    static = static_subnet(model, spec)
    x = images(2)
    path = str(tmp_path / 'vit.onnx')
    torch.onnx.export(static, (x, ), path, input_names=['input'],
                      output_names=['logits'], dynamo=False)
    session = onnxruntime.InferenceSession(path)
    out = session.run(None, {'input': x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), static(x), atol=1e-4,
                               rtol=1e-4)


def test_static_vit_needs_the_classifier_layout():
    model = build(out_type='avg_featmap')
    with pytest.raises(ValueError, match="out_type=cls_token.*'avg_featmap'"):
        static_subnet(model, model.backbone.space.largest)

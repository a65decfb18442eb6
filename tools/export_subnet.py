# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Export one sub-network of a trained supernet as a static model.

    python tools/export_subnet.py CONFIG CHECKPOINT --subnet K --out DIR
        [--onnx] [--shape H W]

Writes ``DIR/subnet_K.pt2`` (``torch.export``; load it with
``torch.export.load`` without dsnet_mm or mmpretrain), optionally
``DIR/subnet_K.onnx`` (checked against the DS model with onnxruntime), and
``DIR/subnet_K.json`` with the input normalisation: the exported network
takes normalised images ``(x - mean) / std`` as the config's data
preprocessor makes them. The sub-network's BN statistics are folded into its
convolutions. A detector config (mmdet, a DS backbone) exports images to the
dense head's raw outputs (``cls_score_<level>``..., ``bbox_pred_<level>``...;
box decoding and NMS are mmdet's ``predict_by_feat``), without mmdet or
mmcv in the graph.
"""
import argparse
import json
import os
import os.path as osp
from typing import List

import torch
from mmengine.runner import load_checkpoint

from dsnet_mm.deploy import (detector_output_names, export_onnx,
                             input_normalisation, static_subnet)
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.engine.cli import (add_cfg_options, add_shape, input_size,
                                 load_config, subnet_key)


def flat_outputs(out) -> List[torch.Tensor]:
    """A classifier's logits, or a detector's ``(cls_scores, bbox_preds)``
    lists, as one list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for part in out for t in flat_outputs(part)]


def max_diff(got, expected: List[torch.Tensor]) -> float:
    got = flat_outputs(got)
    if len(got) != len(expected):
        raise SystemExit(f'the exported model has {len(got)} outputs, the '
                         f'DS model {len(expected)}')
    return max(float((g - e).abs().max()) for g, e in zip(got, expected))


def parse_args():
    parser = argparse.ArgumentParser(
        description='Export a sub-network as a static model')
    parser.add_argument('config', help='model config')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument(
        '--subnet',
        required=True,
        help="sub-network index, or 'largest' / 'smallest'")
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--onnx', action='store_true', help='also ONNX')
    add_shape(parser)
    add_cfg_options(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    model = build_model_from_cfg(cfg)
    shape = input_size(cfg, args.shape)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True,
                    logger='silent')
    model.eval()
    key = subnet_key(args.subnet)
    spec = model.backbone.space.get(key)
    try:
        static = static_subnet(model, spec)
    except ValueError as e:
        raise SystemExit(f'export_subnet.py: error: {e}')
    x = torch.randn(2, model.backbone.in_channels, *shape)
    with torch.no_grad(), model.backbone.subnet(spec):
        expected = flat_outputs(model(x))
    os.makedirs(args.out, exist_ok=True)
    stem = osp.join(args.out, spec.name)
    exported = torch.export.export(static, (x, ))
    torch.export.save(exported, stem + '.pt2')
    with torch.no_grad():
        diff = max_diff(torch.export.load(stem + '.pt2').module()(x),
                        expected)
    print(f'{stem}.pt2: max |difference| to the DS model {diff:.2e}')
    names = detector_output_names(model) if hasattr(model, 'bbox_head') \
        else ('logits', )
    report = dict(subnet=spec.name, widths=dict(spec), outputs=list(names),
                  pt2_max_diff=diff)
    if args.onnx:
        import onnxruntime
        export_onnx(static, x, stem + '.onnx', 'input', names)
        session = onnxruntime.InferenceSession(
            stem + '.onnx', providers=['CPUExecutionProvider'])
        out = session.run(None, {'input': x.numpy()})
        report['onnx_max_diff'] = max_diff(
            [torch.from_numpy(o) for o in out], expected)
        print(f"{stem}.onnx: max |difference| to the DS model "
              f"{report['onnx_max_diff']:.2e}")
    report['normalisation'] = input_normalisation(model)
    with open(stem + '.json', 'w') as f:
        json.dump(report, f, indent=2)
    worst = max(report['pt2_max_diff'], report.get('onnx_max_diff', 0.0))
    if worst > 1e-4:
        raise SystemExit(f'exported model differs from the DS model by '
                         f'{worst:.2e} (> 1e-4)')


if __name__ == '__main__':
    main()

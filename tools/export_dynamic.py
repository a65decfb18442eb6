# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Export a gated DS classifier (Stage II) as a deployable dynamic model.

    python tools/export_dynamic.py CONFIG CHECKPOINT --out DIR [--shape H W]
    python tools/export_dynamic.py CONFIG --random-init --out DIR ...

Writes ``DIR/pre_gate.onnx`` (normalised images to the features after the
gate's attention and the gate logits), ``DIR/post_gate_<subnet>.onnx`` for
each sub-network of the routing window (those features to class logits) and
the manifest ``DIR/dynamic.json`` (window, MAdds, relative costs, cost
penalty, input normalisation and shape, files, opset, measured differences);
BN is folded. Run the folder with ``dsnet_mm.deploy.OrtDynamicModel``
(numpy and onnxruntime only). The export checks itself on a random batch
against the model's ``forward_dynamic(x, 'bucket')`` and fails if the class
logits differ by more than 1e-4 of the largest one (1e-4 below 1) or an image
is routed differently.
``--random-init`` exports the model as built, without a checkpoint (to check
the export or to benchmark an architecture).
"""
import argparse
import time

from mmengine.runner import load_checkpoint

from dsnet_mm.deploy import ExportMismatchError, export_dynamic
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.engine.cli import (add_cfg_options, add_shape, checked,
                                 input_size, load_config)
from dsnet_mm.models.classifiers import DSGateClassifier


def parse_args():
    parser = argparse.ArgumentParser(
        description='Export a gated classifier as a dynamic ONNX model')
    parser.add_argument('config', help='Stage II (gated) model config')
    parser.add_argument(
        'checkpoint', nargs='?', help='trained checkpoint (or --random-init)')
    parser.add_argument(
        '--random-init',
        action='store_true',
        help='export the model as built, without a checkpoint')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument(
        '--batch-size',
        type=checked(int, low=1),
        default=8,
        help='random images of the export check (default: 8)')
    add_shape(parser)
    add_cfg_options(parser)
    args = parser.parse_args()
    if args.random_init == (args.checkpoint is not None):
        parser.error('give either CHECKPOINT or --random-init (a model as '
                     'built), not both and not neither')
    return args


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    model = build_model_from_cfg(cfg)
    # before the checkpoint, which would not match such a model either
    if not isinstance(model, DSGateClassifier):
        raise SystemExit(
            f'export_dynamic.py: error: {args.config} builds a '
            f'{type(model).__name__}; a dynamic export needs a '
            'DSGateClassifier (a Stage II config whose backbone has a gate, '
            'e.g. configs/ds_mbnet_digits_gate.py). For one sub-network of '
            'a supernet use tools/export_subnet.py')
    if args.checkpoint is not None:
        load_checkpoint(model, args.checkpoint, map_location='cpu',
                        strict=True, logger='silent')
    model.eval()
    start = time.time()
    try:
        manifest = export_dynamic(model, args.out,
                                  input_size(cfg, args.shape),
                                  batch_size=args.batch_size)
    except (ValueError, ExportMismatchError) as e:
        # a backbone without a static builder, or a failed check
        raise SystemExit(f'export_dynamic.py: error: {e}')
    check = manifest['check']
    print(f"{args.out}: {manifest['pre_gate']} and "
          f"{len(manifest['window'])} post-gate models in "
          f'{time.time() - start:.1f}s')
    for member, n in zip(manifest['window'], check['images_per_member']):
        print(f"  {member['file']}: {member['madds'] / 1e6:.2f}M MAdds "
              f"({member['relative_cost']:.3f} of the widest), "
              f'{n} check images')
    print(f"max |difference| to the model: class logits "
          f"{check['logits_max_diff']:.2e} (max |logit| "
          f"{check['logits_max_abs']:.2e}), gate logits "
          f"{check['gate_logits_max_diff']:.2e}; routes identical: "
          f"{check['routes_identical']} (cost penalty "
          f"{manifest['cost_penalty']:g})")


if __name__ == '__main__':
    main()

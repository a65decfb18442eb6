# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Recalibrate the BN statistics of every sub-network of a trained supernet.

    python tools/calibrate_bn.py CONFIG CHECKPOINT --out OUT [--num-batches N]

Between Stage I and Stage II (reference: ``reset_bn``): each sub-network's
statistics row is reset and re-estimated from ``N`` training batches (train
augmentation, no gradients); the result is written atomically to ``OUT``.
"""
import argparse
import time

from mmengine.runner import Runner, load_checkpoint, save_checkpoint

from dsnet_mm.engine import build_model_from_cfg, calibrate_bn
from dsnet_mm.engine.cli import add_cfg_options, load_config


def parse_args():
    parser = argparse.ArgumentParser(
        description='Recalibrate the BN statistics of every sub-network')
    parser.add_argument('config', help='Stage I config file')
    parser.add_argument('checkpoint', help='Stage I checkpoint')
    parser.add_argument('--out', required=True, help='output checkpoint')
    parser.add_argument(
        '--num-batches',
        type=int,
        default=100,
        help='training batches per sub-network (default: 100)')
    add_cfg_options(parser)
    args = parser.parse_args()
    if args.num_batches < 1:
        parser.error(f'--num-batches must be >= 1, got {args.num_batches}')
    return args


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    model = build_model_from_cfg(cfg)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    loader = Runner.build_dataloader(
        cfg.train_dataloader, seed=cfg.get('randomness', {}).get('seed'))
    space = model.backbone.space
    specs = [*space.subnets, space.largest]
    for k, spec in enumerate(specs, 1):
        start = time.time()
        used = calibrate_bn(model, loader, spec, args.num_batches)
        print(f'[{k}/{len(specs)}] {spec.name}: {used} batches, '
              f'{time.time() - start:.1f}s', flush=True)
    # written atomically by dsnet_mm's local file backend
    save_checkpoint(dict(state_dict=model.state_dict(),
                         meta=dict(calibrated_from=args.checkpoint,
                                   num_batches=args.num_batches)), args.out)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()

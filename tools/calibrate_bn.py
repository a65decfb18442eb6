# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Recalibrate the BN statistics of every sub-network of a trained supernet.

    python tools/calibrate_bn.py CONFIG CHECKPOINT --out OUT [--num-batches N]
    torchrun --nproc_per_node=N tools/calibrate_bn.py ... --launcher pytorch

Between Stage I and Stage II (reference: ``reset_bn``): each sub-network's
statistics row is reset and re-estimated from ``N`` training batches (train
augmentation, no gradients); the result is written atomically to ``OUT``.
With a launcher the ranks share the batches and reduce their statistics,
which equal one process's (see :mod:`dsnet_mm.engine.bn_calibration`); the
tensors stay on the CPU.
"""
import argparse
import time

from mmengine.dist import is_main_process
from mmengine.runner import load_checkpoint, save_checkpoint, set_random_seed

from dsnet_mm.engine import (build_calibration_dataloader,
                             build_model_from_cfg, calibrate_bn)
from dsnet_mm.engine.cli import (add_cfg_options, add_launcher, distributed,
                                 export_local_rank, load_config)


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
    add_launcher(parser)
    args = parser.parse_args()
    if args.num_batches < 1:
        parser.error(f'--num-batches must be >= 1, got {args.num_batches}')
    if args.launcher == 'mpi':
        parser.error('--launcher mpi is not supported by this tool: use '
                     'pytorch (torchrun) or slurm (srun)')
    export_local_rank(args)
    return args


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    with distributed(args.launcher, cpu=True):
        # the augmentation draws follow the config's seed (shared by ranks)
        seed = set_random_seed(cfg.get('randomness', {}).get('seed'))
        model = build_model_from_cfg(cfg)
        load_checkpoint(model, args.checkpoint, map_location='cpu',
                        strict=True)
        loader = build_calibration_dataloader(cfg.train_dataloader, seed)
        space = model.backbone.space
        specs = [*space.subnets, space.largest]
        for k, spec in enumerate(specs, 1):
            start = time.time()
            used = calibrate_bn(model, loader, spec, args.num_batches)
            if is_main_process():
                print(f'[{k}/{len(specs)}] {spec.name}: {used} batches, '
                      f'{time.time() - start:.1f}s', flush=True)
        if is_main_process():
            # written atomically by dsnet_mm's local file backend
            save_checkpoint(
                dict(state_dict=model.state_dict(),
                     meta=dict(calibrated_from=args.checkpoint,
                               num_batches=args.num_batches)), args.out)
            print(f'wrote {args.out}')


if __name__ == '__main__':
    main()

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Train a model from an MM-style config (mmpretrain's train script, DS-aware).

``--amp`` trains with mixed precision on the device the runner trains on:
mmengine's ``AmpOptimWrapper`` (float16 autocast, dynamic loss scaling) on a
GPU, :class:`~dsnet_mm.engine.CPUAmpOptimWrapper` (bfloat16 autocast, no loss
scaling) on the CPU. Either replaces the type of the config's
``optim_wrapper`` and keeps its other keys; on a device with neither (e.g.
Apple's MPS), or with a CPU run whose config sets GPU-only keys
(``optim_wrapper.loss_scale``), the tool stops with a message naming the flag
and what to do. Evaluation autocasts with ``val_cfg.fp16=True`` /
``test_cfg.fp16=True`` (bfloat16 on the CPU).

A run that loads or resumes a checkpoint (``load_from``, ``--resume``) checks
it whole with :class:`~dsnet_mm.engine.CheckpointMatchHook`, added where the
config's ``custom_hooks`` lack it: mmengine loads with ``strict=False`` and
only logs what did not match.
"""
import argparse
import os.path as osp

from mmengine.config import Config
from mmengine.runner import Runner

from dsnet_mm.engine import amp_optim_wrapper
from dsnet_mm.engine.checkpoint import latest_checkpoint
from dsnet_mm.engine.cli import (add_cfg_options, add_launcher,
                                 add_trust_checkpoint, checkpoint_trust,
                                 distributed, export_local_rank,
                                 load_config)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a DS model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint; without a path, from the '
        'newest complete checkpoint in the work dir')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision: float16 autocast with loss scaling '
        "(mmengine's AmpOptimWrapper) on a GPU, bfloat16 autocast "
        '(CPUAmpOptimWrapper) on the CPU')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='skip validation during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the real batch size')
    add_cfg_options(parser)
    add_launcher(parser)
    add_trust_checkpoint(parser)
    args = parser.parse_args()
    export_local_rank(args)
    return args


def merge_args(cfg: Config, args) -> Config:
    """Fold the command-line options into the config.

    Raises:
        SystemExit: ``--amp`` cannot run on this machine's device or with
            this config (see :func:`~dsnet_mm.engine.amp_optim_wrapper`).
    """
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(cfg.filename))[0])
    if args.amp:
        try:
            cfg.optim_wrapper = amp_optim_wrapper(cfg.optim_wrapper)
        except ValueError as e:
            raise SystemExit(str(e)) from e
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = latest_checkpoint(cfg.work_dir)
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    hooks = list(cfg.get('custom_hooks') or [])
    if cfg.get('load_from') and not any(
            str(h.get('type', '')).endswith('CheckpointMatchHook')
            for h in hooks):
        # mmengine loads with strict=False and only logs what did not match
        cfg.custom_hooks = [*hooks,
                            dict(type='mmpretrain.CheckpointMatchHook')]
    return cfg


def train(cfg: Config, trust_checkpoint: bool) -> None:
    """Build the runner and train; the runner (and its DDP wrapper) ends
    with this call, before the process group does."""
    runner = Runner.from_cfg(cfg)
    with checkpoint_trust(trust_checkpoint):
        runner.train()


def main():
    args = parse_args()
    cfg = merge_args(load_config(args.config, args.cfg_options), args)
    with distributed(cfg.launcher):
        train(cfg, args.trust_checkpoint)


if __name__ == '__main__':
    main()

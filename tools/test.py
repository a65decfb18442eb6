# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Evaluate a checkpoint from an MM-style config (every sub-network with
``SubnetTestLoop``)."""
import argparse
import os.path as osp

import mmengine
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from dsnet_mm.engine.cli import (add_cfg_options, add_launcher,
                                 add_trust_checkpoint, checkpoint_trust,
                                 distributed, export_local_rank,
                                 load_config)


def parse_args():
    parser = argparse.ArgumentParser(description='Test a DS model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs')
    parser.add_argument(
        '--out', help='dump the metrics to this file (json/yaml/pickle)')
    add_cfg_options(parser)
    add_launcher(parser)
    add_trust_checkpoint(parser)
    args = parser.parse_args()
    export_local_rank(args)
    return args


def evaluate(cfg, trust_checkpoint: bool) -> dict:
    """Build the runner and test; the runner ends with this call, before
    the process group does."""
    runner = Runner.from_cfg(cfg)
    with checkpoint_trust(trust_checkpoint):
        return runner.test()


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(cfg.filename))[0])
    cfg.load_from = args.checkpoint
    with distributed(cfg.launcher):
        metrics = evaluate(cfg, args.trust_checkpoint)
        # every rank holds the gathered metrics; one writes them
        if args.out and is_main_process():
            mmengine.dump(metrics, args.out)


if __name__ == '__main__':
    main()

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Convert the reference DS-Net release checkpoint for dsnet_mm.

    python tools/convert/official_dsnet.py IN OUT [--config CONFIG] [--ema]

``IN`` is the reference checkpoint (e.g. ``DS_MBNet-70_1.pth.tar``) holding
``state_dict`` and ``state_dict_ema``; ``OUT`` loads into the model of
``CONFIG`` (default: ``configs/ds_mbnet_imagenet.py``; a Stage II config with
a gate also takes the slimming head) with ``tools/test.py`` or ``load_from``.
"""
import argparse
import os.path as osp

import torch
from mmengine.runner import save_checkpoint

from dsnet_mm.converters import convert_official_dsnet
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.engine.cli import (add_cfg_options, add_trust_checkpoint,
                                 checkpoint_trust, load_config)

DEFAULT_CONFIG = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'ds_mbnet_imagenet.py')


def parse_args():
    parser = argparse.ArgumentParser(
        description='Convert a reference DS-Net checkpoint')
    parser.add_argument('src', help='reference checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument(
        '--config', default=DEFAULT_CONFIG, help='target model config')
    parser.add_argument(
        '--ema',
        action='store_true',
        help="convert 'state_dict_ema' (what the reference evaluates)")
    add_cfg_options(parser)
    add_trust_checkpoint(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    model = build_model_from_cfg(load_config(args.config, args.cfg_options))
    with checkpoint_trust(args.trust_checkpoint):
        ckpt = torch.load(args.src, map_location='cpu')
    key = 'state_dict_ema' if args.ema else 'state_dict'
    if isinstance(ckpt, dict) and key in ckpt:
        state = ckpt[key]
    elif args.ema:
        raise SystemExit(f'{args.src} has no state_dict_ema')
    else:
        state = ckpt
    converted = convert_official_dsnet(state, model.backbone)
    model.load_state_dict(converted, strict=False)  # checks the shapes
    # written atomically by dsnet_mm's local file backend
    save_checkpoint(dict(state_dict=converted,
                         meta=dict(converted_from=args.src, source_key=key)),
                    args.dst)
    print(f'converted {len(converted)} tensors from {args.src} ({key}) '
          f'to {args.dst}')


if __name__ == '__main__':
    main()

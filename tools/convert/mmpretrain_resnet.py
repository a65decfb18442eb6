# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Convert mmpretrain ResNet weights into a full-width DS-ResNet supernet.

    python tools/convert/mmpretrain_resnet.py IN OUT [--config CONFIG]

``IN`` is an mmpretrain ``ResNet`` / ``ResNet_CIFAR`` checkpoint: a full
``ImageClassifier`` checkpoint (its head is converted too) or a bare backbone
state dict. ``OUT`` holds ``backbone.*`` (and ``head.*``) keys for the model
of ``CONFIG`` (default: ``configs/ds_resnet50_imagenet.py``); start a
supernet from it with ``model.backbone.init_cfg=dict(type='Pretrained',
checkpoint=OUT, prefix='backbone.')``. Every BN statistics row gets the static
network's statistics: recalibrate (``tools/calibrate_bn.py``) before
evaluating narrower sub-networks.
"""
import argparse
import os.path as osp

import torch
from mmengine.runner import save_checkpoint

from dsnet_mm.converters import convert_mmpretrain_resnet
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.engine.cli import (add_cfg_options, add_trust_checkpoint,
                                 checkpoint_trust, load_config)

DEFAULT_CONFIG = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'ds_resnet50_imagenet.py')


def parse_args():
    parser = argparse.ArgumentParser(
        description='Convert mmpretrain ResNet weights for DS-ResNet')
    parser.add_argument('src', help='mmpretrain ResNet checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument(
        '--config', default=DEFAULT_CONFIG, help='target model config')
    add_cfg_options(parser)
    add_trust_checkpoint(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    model = build_model_from_cfg(load_config(args.config, args.cfg_options))
    with checkpoint_trust(args.trust_checkpoint):
        ckpt = torch.load(args.src, map_location='cpu',
                          weights_only=not args.trust_checkpoint)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    try:
        converted = convert_mmpretrain_resnet(state, model.backbone)
    except (KeyError, ValueError) as e:
        raise SystemExit(f'cannot convert {args.src}: {e}') from e
    result = model.load_state_dict(converted, strict=False)  # checks shapes
    kept = sorted({k.rsplit('.', 1)[0] for k in result.missing_keys
                   if k.startswith('backbone.')})
    # written atomically by dsnet_mm's local file backend
    save_checkpoint(dict(state_dict=converted,
                         meta=dict(converted_from=args.src)), args.dst)
    print(f'converted {len(converted)} tensors from {args.src} to '
          f'{args.dst}')
    if kept:
        print(f'not in the source, left at their initialisation: {kept}')


if __name__ == '__main__':
    main()

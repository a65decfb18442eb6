# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Convert the reference DS-Net release checkpoint for dsnet_mm.

    python tools/convert/official_dsnet.py IN OUT [--config CONFIG] [--ema]

``IN`` is the reference checkpoint (e.g. ``DS_MBNet-70_1.pth.tar``) holding
``state_dict`` and ``state_dict_ema``; ``OUT`` loads into the model of
``CONFIG`` (default: ``dsnet_mm::ds_mbnet_imagenet.py``; a Stage II config with
a gate also takes the slimming head) with ``tools/test.py`` or ``load_from``.
"""
from dsnet_mm.converters import convert_official_dsnet
from dsnet_mm.engine.cli import (converter_parser, load_for_conversion,
                                 save_converted)


def parse_args():
    parser = converter_parser('Convert a reference DS-Net checkpoint',
                              'reference checkpoint', 'ds_mbnet_imagenet.py')
    parser.add_argument(
        '--ema',
        action='store_true',
        help="convert 'state_dict_ema' (what the reference evaluates)")
    return parser.parse_args()


def main():
    args = parse_args()
    model, ckpt = load_for_conversion(args)
    key = 'state_dict_ema' if args.ema else 'state_dict'
    if isinstance(ckpt, dict) and key in ckpt:
        state = ckpt[key]
    elif args.ema:
        raise SystemExit(f'{args.src} has no state_dict_ema')
    else:
        state = ckpt
    converted = convert_official_dsnet(state, model.backbone)
    model.load_state_dict(converted, strict=False)  # checks the shapes
    save_converted(converted, args, source_key=key)


if __name__ == '__main__':
    main()

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Convert mmpretrain ResNet weights into a full-width DS-ResNet supernet.

    python tools/convert/mmpretrain_resnet.py IN OUT [--config CONFIG]

``IN`` is an mmpretrain ``ResNet`` / ``ResNet_CIFAR`` checkpoint: a full
``ImageClassifier`` checkpoint (its head is converted too) or a bare backbone
state dict. ``OUT`` holds ``backbone.*`` (and ``head.*``) keys for the model
of ``CONFIG`` (default: ``dsnet_mm::ds_resnet50_imagenet.py``); start a
supernet from it with ``model.backbone.init_cfg=dict(type='Pretrained',
checkpoint=OUT, prefix='backbone.')``. Every BN statistics row gets the static
network's statistics: recalibrate (``tools/calibrate_bn.py``) before
evaluating narrower sub-networks.
"""
from dsnet_mm.converters import convert_mmpretrain_resnet
from dsnet_mm.engine.cli import (converter_parser, load_for_conversion,
                                 save_converted)


def main():
    args = converter_parser(
        'Convert mmpretrain ResNet weights for DS-ResNet',
        'mmpretrain ResNet checkpoint', 'ds_resnet50_imagenet.py').parse_args()
    model, ckpt = load_for_conversion(args)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
    try:
        converted = convert_mmpretrain_resnet(state, model.backbone)
    except (KeyError, ValueError) as e:
        raise SystemExit(f'cannot convert {args.src}: {e}') from e
    result = model.load_state_dict(converted, strict=False)  # checks shapes
    kept = sorted({k.rsplit('.', 1)[0] for k in result.missing_keys
                   if k.startswith('backbone.')})
    save_converted(converted, args)
    if kept:
        print(f'not in the source, left at their initialisation: {kept}')


if __name__ == '__main__':
    main()

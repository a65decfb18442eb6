# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Write scikit-learn's digits as real image data sets (no download).

Writes ``OUT/digits/cifar/digits-batches-py`` (CIFAR-10 pickle layout, read
by ``DigitsCIFAR10``) and ``OUT/digits/imagenet`` (folder layout with
``meta/train.txt`` and ``meta/val.txt``, read by mmpretrain's
``CustomDataset``). Idempotent: a complete, intact copy is left as it is.

Example::

    python tools/dataset_converters/write_digits.py --out data
"""
import argparse
import json
import os.path as osp
import sys


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write the UCI digits shipped with scikit-learn in the '
        'CIFAR-10 and ImageNet-style layouts.')
    parser.add_argument(
        '--out',
        default='data',
        help='data root; the data goes to OUT/digits (default: data)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        from dsnet_mm.datasets import digits
    except ImportError:  # run from a checkout without installing it
        sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
            osp.abspath(__file__)))))
        from dsnet_mm.datasets import digits

    final = osp.join(osp.abspath(args.out), digits.DIGITS_DIR)
    existed = digits.is_complete(final)
    digits.write_digits(args.out)
    with open(osp.join(final, digits.MARKER)) as f:
        marker = json.load(f)
    state = 'already complete, left as it was' if existed else 'written'
    sizes = marker['splits']
    print(f'digits data set {state}: {final}')
    print(f'  CIFAR-10 layout: {osp.join(final, digits.CIFAR_SUBDIR)}')
    print(f'  folder layout:   {osp.join(final, digits.IMAGENET_SUBDIR)}')
    print(f"  train: {sizes['train']} images, test/val: {sizes['test']} "
          f'images, {len(digits.DIGITS_CLASSES)} classes')


if __name__ == '__main__':
    main()

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Write scikit-learn's digits as real image data sets (no download).

Writes two classification data sets, each in the CIFAR-10 pickle layout
and the ImageNet-style folder layout (``meta/train.txt``, ``meta/val.txt``),
and one detection data set in the PASCAL VOC layout:

- ``OUT/digits``: the plain digits (``DigitsCIFAR10``, ``CustomDataset``);
- ``OUT/graded_digits``: four difficulty levels of every source digit
  (``GradedDigitsCIFAR10``, ``GradedDigitsFolder``; see
  ``dsnet_mm.datasets.graded_digits``);
- ``OUT/digits_voc/VOCdevkit/VOC2007``: the digits pasted onto canvases at
  the same four levels (mmdet's ``VOCDataset``, ``DigitsVOCDataset``; see
  ``dsnet_mm.datasets.digits_voc``). Needs mmdet (the ``det`` extra); without
  it this set is skipped with a note.

Idempotent: a complete, intact copy is left as it is.

Example::

    python tools/dataset_converters/write_digits.py --out data
"""
import argparse
import json
import os.path as osp
import sys


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Write the UCI digits shipped with scikit-learn (plain '
        'and graded) in the CIFAR-10 and ImageNet-style layouts.')
    parser.add_argument(
        '--out',
        default='data',
        help='data root; the data goes to OUT/digits, OUT/graded_digits and '
        'OUT/digits_voc (default: data)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    try:
        from dsnet_mm.datasets import digits, graded_digits
    except ImportError:  # run from a checkout without installing it
        sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
            osp.abspath(__file__)))))
        from dsnet_mm.datasets import digits, graded_digits

    for layout in (digits.DIGITS_LAYOUT, graded_digits.GRADED_LAYOUT):
        final = osp.join(osp.abspath(args.out), layout.name)
        existed = digits.is_complete(final, layout)
        digits.write_layout(args.out, layout)
        with open(osp.join(final, digits.MARKER)) as f:
            sizes = json.load(f)['splits']
        state = 'already complete, left as it was' if existed else 'written'
        print(f'{layout.name} data set {state}: {final}')
        print(f'  CIFAR-10 layout: {osp.join(final, layout.cifar_subdir)}')
        print(f'  folder layout:   '
              f'{osp.join(final, digits.IMAGENET_SUBDIR)}')
        print(f"  train: {sizes['train']} images, test/val: "
              f"{sizes['test']} images, {len(digits.DIGITS_CLASSES)} classes")

    try:
        from dsnet_mm.datasets import digits_voc
    except ModuleNotFoundError as e:
        if e.name != 'mmdet':
            raise
        print('digits_voc detection set skipped: it needs mmdet '
              "(pip install 'mmdet==3.3.0')")
        return
    final = osp.join(osp.abspath(args.out), digits_voc.DIGITS_VOC_DIR)
    existed = digits_voc.is_complete(final)
    digits_voc.write_digits_voc(args.out)
    with open(osp.join(final, digits.MARKER)) as f:
        marker = json.load(f)
    state = 'already complete, left as it was' if existed else 'written'
    print(f'digits_voc detection set {state}: {final}')
    print(f'  VOC layout: {osp.join(final, digits_voc.VOC_SUBDIR)}')
    for split, _ in digits_voc.SPLITS:
        print(f"  {split}: {marker['splits'][split]} images, "
              f"{marker['objects'][split]} digits")


if __name__ == '__main__':
    main()

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Searched sub-networks against a uniform (US-Net) baseline at equal MAdds.

    python tools/analysis/compare_subnets.py SEARCHED_JSON UNIFORM_JSON
        --out DIR [--labels A B] [--title T] [--num-images N]

Both files are ``subnet_results.json`` of the evaluation loop. Writes
``comparison.md``, ``comparison.png`` and ``comparison.json`` into DIR: the
top-1 of every searched sub-network inside the uniform MAdds range minus the
uniform curve interpolated at its MAdds, and their mean / max / min.
"""
import argparse
import json
import os.path as osp
import sys


def _results_file(path: str) -> str:
    """An argument that must be a readable JSON object with ``subnets``.

    Checked before the package is imported (which registers its models and
    takes seconds), so that a wrong path fails at once.
    """
    if not osp.isfile(path):
        raise argparse.ArgumentTypeError(f'no such file: {path}')
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(f'cannot read {path} as JSON: {e}')
    if not isinstance(results, dict) or 'subnets' not in results:
        raise argparse.ArgumentTypeError(
            f'{path} has no "subnets" (expected a subnet_results.json of the '
            'evaluation loop)')
    return path


def parse_args():
    parser = argparse.ArgumentParser(
        description='Searched sub-networks against a uniform baseline at '
        'equal MAdds')
    parser.add_argument('searched_json', metavar='SEARCHED_JSON',
                        type=_results_file,
                        help='subnet_results.json of the searched '
                        'sub-networks')
    parser.add_argument('uniform_json', metavar='UNIFORM_JSON',
                        type=_results_file,
                        help='subnet_results.json of the uniform baseline')
    parser.add_argument('--out', required=True, metavar='DIR',
                        help='directory to write the comparison into')
    parser.add_argument('--labels', nargs=2, metavar=('A', 'B'),
                        default=['searched', 'uniform'],
                        help='names of the two sets (default: searched '
                        'uniform)')
    parser.add_argument('--title', default='Searched vs uniform '
                        'sub-networks', help='title of the report and plot')
    parser.add_argument('--num-images', type=int,
                        help='test images behind each top-1, for +-1 s.e. '
                        'error bars')
    args = parser.parse_args()
    if args.num_images is not None and args.num_images < 1:
        parser.error(f'--num-images must be >= 1, got {args.num_images}')
    return args


def main():
    args = parse_args()
    from dsnet_mm.analysis.search_report import (show_comparison,
                                                 write_comparison)
    try:
        paths = write_comparison(args.searched_json, args.uniform_json,
                                 args.out, args.labels, args.title,
                                 args.num_images)
    except ValueError as e:
        sys.exit(f'compare_subnets.py: error: {e}')
    show_comparison(paths)


if __name__ == '__main__':
    main()

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Sub-network lists trained alike, compared over paired seeds
(:mod:`dsnet_mm.search.comparison`, docs/search.md).

    python tools/analysis/compare_search.py prepare CONFIG --out DIR
        [--arms searched uniform usnet | NAME=FILE ...] [--baseline usnet]
        [--search-dir D] [--match ARM] [--label-weight 0]
        [--calib-batches 40] [--input-shape C H W]
    python tools/analysis/compare_search.py check [--arms ...] [--baseline B]
    python tools/analysis/compare_search.py report RUNS_DIR --seeds 0 1 2
        [--arms ...] [--baseline usnet] [--out DIR] [--title T]

``prepare`` writes one Stage I config per arm into DIR (train each with
``tools/train.py DIR/ARM.py --work-dir RUNS_DIR/seedS/ARM --cfg-options
randomness.seed=S``); ``report`` reads ``RUNS_DIR/seedS/ARM/
subnet_results.json`` for every seed and arm and writes ``comparison.md``,
``comparison.json`` and ``comparison.png`` (default: RUNS_DIR/report).
tools/run_search_comparison.sh runs the whole comparison.
"""
import argparse
import os.path as osp
import sys

from dsnet_mm.engine.cli import checked

DEFAULT_ARMS = ['searched', 'uniform', 'usnet']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Sub-network lists trained alike, paired over seeds')
    sub = parser.add_subparsers(dest='command', required=True)
    prep = sub.add_parser('prepare', help="write each arm's Stage I config")
    prep.add_argument('config', help='the search config (every arm\'s base)')
    prep.add_argument('--out', required=True, help='where the configs go')
    prep.add_argument('--search-dir', help='a finished search (needed by '
                      'the searched arm)')
    prep.add_argument('--match', help='the arm whose MAdds the uniform list '
                      'follows (default: the first arm with its own list)')
    prep.add_argument('--label-weight', type=checked(float, low=0),
                      default=0.0, help='student_label_weight of every arm '
                      '(default 0: the students learn from the teacher only)')
    prep.add_argument('--calib-batches', type=checked(int, low=1),
                      default=40, help='BN recalibration batches before '
                      'each sub-network is evaluated (default 40)')
    prep.add_argument('--input-shape', type=checked(int, low=1), nargs=3,
                      metavar=('C', 'H', 'W'),
                      help='image shape for MAdds (default: the search\'s)')
    check = sub.add_parser('check', help='check the arms and exit')
    rep = sub.add_parser('report', help='the paired report of the runs')
    rep.add_argument('runs_dir', help='holds seedS/ARM/subnet_results.json')
    rep.add_argument('--seeds', type=checked(int, low=0), nargs='+',
                     required=True)
    rep.add_argument('--out', help='default: RUNS_DIR/report')
    rep.add_argument('--title', default='Sub-network lists, paired seeds')
    for p in (prep, check, rep):
        p.add_argument('--arms', nargs='+', default=DEFAULT_ARMS,
                       help='searched, uniform, usnet or NAME=FILE (a JSON '
                       'list of width vectors); default: '
                       + ' '.join(DEFAULT_ARMS))
        p.add_argument('--baseline', default='usnet',
                       help='the arm the gaps are measured against '
                       '(default usnet)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from dsnet_mm.analysis.search_report import show_comparison
    from dsnet_mm.search import comparison as sc
    try:
        arms = sc.parse_arms(args.arms, args.baseline)
        if args.command == 'check':
            for arm in arms:
                if arm['kind'] == 'list':
                    sc.read_width_list(arm['path'])
            print(f"arms {[a['name'] for a in arms]}, baseline "
                  f'{args.baseline}: ok')
            return
        if args.command == 'prepare':
            paths = sc.prepare_arms(
                args.config, args.out, args.arms, args.baseline,
                search_dir=args.search_dir, match=args.match,
                label_weight=args.label_weight,
                calib_batches=args.calib_batches,
                input_shape=args.input_shape)
            for name, path in paths.items():
                print(f'{name}: {path}')
            return
        out = args.out or osp.join(args.runs_dir, 'report')
        paths = sc.write_report(args.runs_dir, args.seeds,
                                [a['name'] for a in arms], args.baseline,
                                out, args.title)
    except ValueError as e:
        sys.exit(f'compare_search.py: error: {e}')
    show_comparison(paths)


if __name__ == '__main__':
    main()

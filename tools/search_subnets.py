# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Progressive sub-network search (docs/search.md) over a DS classifier config.

    python tools/search_subnets.py CONFIG --work-dir DIR [options]

Base training with trainable ranking noise, channel reordering, the greedy
search with selective fine-tuning and re-selection (see
:mod:`dsnet_mm.search`). The options default to the config's ``search``
dict; each one given here overrides it. Resumable: run the same command
again and it continues from ``DIR/search_state.pth``. Writes into DIR:
``trajectory.json``, ``trajectory.png``, ``subnets.json`` and the configs
``searched.py`` (Stage I over the searched list), ``uniform.py`` (the US-Net
baseline at matched MAdds) and, with ``--gate-config``, ``searched_gate.py``.
"""
import argparse
import time

from mmengine.utils import ProgressBar

from dsnet_mm.engine.cli import add_cfg_options, checked, load_config
from dsnet_mm.search import SearchRunner
from dsnet_mm.search.channels import SCOPES
from dsnet_mm.search.noise import NOISE_ORDERS
from dsnet_mm.search.progressive import CRITERIA, STEP_RULES
from dsnet_mm.search.runner import RANKINGS, STAGE1_LISTS, option_type


def parse_args():
    parser = argparse.ArgumentParser(
        description='Progressive sub-network search for dynamic inference')
    parser.add_argument('config', help='Stage I config of a DS classifier')
    parser.add_argument('--work-dir', required=True,
                        help='state and outputs of the search')
    parser.add_argument('--gate-config',
                        help='a Stage II config: also write '
                        'searched_gate.py, Stage II over the searched list')
    parser.add_argument('--groups', type=option_type('groups'),
                        help='G: channel groups per width group')
    parser.add_argument('--min-ratio', type=option_type('min_ratio'),
                        help='smallest width of a group, in (0, 1]')
    parser.add_argument('--held-out', type=option_type('held_out'),
                        help='training images held out for scoring')
    parser.add_argument('--threshold', type=option_type('threshold'),
                        help='fine-tune when held-out top-1 (%%) is below')
    parser.add_argument('--finetune-iters', type=option_type('finetune_iters'),
                        help='fine-tuning budget (steps) per event')
    parser.add_argument('--num-keep', type=option_type('num_keep'),
                        help='K: sub-networks kept by re-selection')
    parser.add_argument('--ranking', choices=RANKINGS,
                        help='channel importance: trained noise or L1 norm')
    parser.add_argument('--noise-order', choices=NOISE_ORDERS,
                        help="'descending': large noise is removed first")
    parser.add_argument('--ranking-scope', choices=SCOPES,
                        help="rank channels per width group or per layer")
    parser.add_argument('--keep-noise', choices=('true', 'false'),
                        help='keep the ranking noise while scoring and '
                        'fine-tuning (the paper) or take it off first')
    parser.add_argument('--criterion', choices=CRITERIA,
                        help='what picks the removal of a step')
    parser.add_argument('--step-rule', choices=STEP_RULES,
                        help="'best': the best score; 'cost': the smallest "
                        'score drop per MAdd saved')
    parser.add_argument('--stage1-list', choices=STAGE1_LISTS,
                        help="Stage I's list: the num_keep re-selected "
                        'points or the whole filtered trajectory')
    parser.add_argument('--base-epochs', type=option_type('base_epochs'),
                        help='epochs of base (noise) training')
    parser.add_argument('--load-from',
                        help='start base training from this checkpoint')
    parser.add_argument('--seed', type=option_type('seed'),
                        help='seed of the search')
    parser.add_argument('--max-steps', type=checked(int, low=1),
                        help='stop after this many search steps (resume '
                        'later with the same command)')
    add_cfg_options(parser)
    return parser.parse_args()


class _Bar:
    """mmengine's progress bar over the search steps (a resumed search
    starts it where it stopped)."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = ProgressBar(total)
            self.bar.completed = done - 1
        self.bar.update()


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    overrides = dict(
        groups=args.groups, min_ratio=args.min_ratio, held_out=args.held_out,
        threshold=args.threshold, finetune_iters=args.finetune_iters,
        num_keep=args.num_keep, ranking=args.ranking,
        noise_order=args.noise_order, criterion=args.criterion,
        ranking_scope=args.ranking_scope, step_rule=args.step_rule,
        stage1_list=args.stage1_list,
        keep_noise=None if args.keep_noise is None else
        args.keep_noise == 'true',
        base_epochs=args.base_epochs, load_from=args.load_from,
        seed=args.seed)
    begin = time.time()
    runner = SearchRunner(cfg, args.config, args.work_dir, overrides,
                          gate_config=args.gate_config, progress=_Bar())
    paths = runner.run(args.max_steps)
    print()
    if paths is None:
        print(f'stopped after --max-steps {args.max_steps}; run again to '
              'resume')
        return
    print(f'search done in {time.time() - begin:.0f}s; wrote')
    for name, path in paths.items():
        print(f'  {name}: {path}')


if __name__ == '__main__':
    main()

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The whole search of one config, resumable, with its outputs.

Phases, each saved atomically into ``search_state.pth`` (weights-only
loadable) so that a killed search resumes where it stopped:

1. **base**: the widest sub-network (from scratch, or from ``load_from``)
   trained with plain supervision, with
   trainable ranking noise on every producing conv (``ranking='noise'``) or
   without (``'l1'``); a state per epoch.
2. **rank**: channels ranked per width group or per layer
   (``ranking_scope``; ``|alpha|`` or L1 norm) and reordered, most
   important first; the noise is taken off, or kept for the search
   (``keep_noise``: candidates scored and fine-tuned with it on).
3. **search**: :class:`~dsnet_mm.search.ProgressiveSearch`, a state per step.
4. **re-selection** and outputs: ``trajectory.json``, ``subnets.json``,
   ``trajectory.png`` and configs that train the result: ``searched.py``
   (Stage I over the searched list: the ``num_keep`` re-selected points,
   or the whole filtered trajectory with ``stage1_list='trajectory'``),
   ``uniform.py`` (the US-Net baseline:
   a uniform list matched in MAdds, trained with ``sampling='usnet'``) and,
   given a gate config, ``searched_gate.py`` (Stage II over the searched
   list).
"""
import json
import math
import os
import os.path as osp
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.engine.cli import checked
from dsnet_mm.models.subnet import SubnetSpace
from dsnet_mm.ops.utils import (check_choice, check_float, check_int,
                                check_type)
from .channels import SCOPES, classifier_axes, l1_scores, permute_channels
from .data import search_data
from .noise import (NOISE_ORDERS, add_channel_noise, channel_alphas,
                    noise_scores, ranking_perms, remove_channel_noise)
from .progressive import (CRITERIA, STEP_RULES, ProgressiveSearch,
                          check_search_args)
from .reselect import pareto_front, reselect, subnet_list
from .training import madds_at, sgd, train_at

RANKINGS = ('noise', 'l1')
STAGE1_LISTS = ('kept', 'trajectory')
# every option of a search, with its default (config ``search=dict(...)``)
DEFAULTS = dict(
    ranking='noise',
    noise_order='descending',
    ranking_scope='group',
    keep_noise=False,
    base_epochs=1,
    base_lr=0.1,
    base_weight_decay=1e-4,
    groups=8,
    min_ratio=0.25,
    held_out=1000,
    threshold=40.0,
    finetune_iters=100,
    finetune_lr=0.01,
    check_interval=20,
    criterion='accuracy',
    step_rule='best',
    num_keep=8,
    stage1_list='kept',
    search_groups=None,
    divisor=1,
    load_from=None,
    seed=0)
# lowest value of each int option (num_keep: both ends are always kept)
INT_OPTIONS = dict(base_epochs=0, held_out=1, finetune_iters=1,
                   check_interval=1, num_keep=2, divisor=1, groups=1, seed=0)
# (low, high, low excluded) of each float option; top-1 thresholds in %
FLOAT_OPTIONS = dict(base_lr=(0, None, True),
                     base_weight_decay=(0, None, False),
                     min_ratio=(0, 1, True), threshold=(0, 100, False),
                     finetune_lr=(0, None, True))
STATE = 'search_state.pth'


def search_options(cfg_search: Optional[Mapping],
                   overrides: Mapping) -> Dict:
    """The config's ``search`` options with command-line ``overrides``
    (None values ignored), checked by name and type."""
    options = dict(DEFAULTS)
    for source in (cfg_search or {}, overrides):
        unknown = sorted(set(source) - set(DEFAULTS))
        if unknown:
            raise ValueError(f'unknown search option(s) {unknown}; allowed: '
                             f'{sorted(DEFAULTS)}')
        options.update({k: v for k, v in source.items() if v is not None})
    for key, allowed in (('ranking', RANKINGS),
                         ('noise_order', NOISE_ORDERS),
                         ('ranking_scope', SCOPES),
                         ('criterion', CRITERIA),
                         ('step_rule', STEP_RULES),
                         ('stage1_list', STAGE1_LISTS)):
        check_choice(f'search {key}', options[key], allowed)
    check_type('search keep_noise', options['keep_noise'], bool, 'a bool')
    if options['keep_noise'] and options['ranking'] != 'noise':
        raise ValueError(
            "search keep_noise=True needs ranking='noise' (there is no noise "
            f"to keep with ranking={options['ranking']!r})")
    for key, low in INT_OPTIONS.items():
        check_int(f'search {key}', options[key], low)
    for key, (low, high, low_open) in FLOAT_OPTIONS.items():
        check_float(f'search {key}', options[key], low, high, low_open)
    check_type('search search_groups', options['search_groups'],
               (type(None), list, tuple), 'None or a list of width groups')
    check_type('search load_from', options['load_from'], (type(None), str),
               'None or a checkpoint path')
    return options


def option_type(key: str) -> Callable[[str], object]:
    """The argparse ``type`` of the numeric search option ``key``, with
    the bounds :func:`search_options` checks."""
    if key in INT_OPTIONS:
        return checked(int, low=INT_OPTIONS[key])
    low, high, low_open = FLOAT_OPTIONS[key]
    return checked(float, low=low, high=high, low_open=low_open)


def _save(state: dict, path: str) -> None:
    """Write next to ``path`` and rename over it: a reader sees the old
    state or the new one, never half of one."""
    tmp = f'{path}.tmp'
    torch.save(state, tmp)
    os.replace(tmp, path)


class SearchRunner:
    """Run (or resume) the progressive search of ``cfg`` in ``work_dir``.

    Args:
        cfg (Config): A Stage I classification config over a DS backbone
            (its ``search`` dict holds the options).
        config_path (str): Where ``cfg`` was read from (the ``_base_`` of
            the written configs).
        work_dir (str): Where the state and the outputs go.
        overrides (Mapping): Options over the config's.
        gate_config (str, optional): A Stage II config; with it
            ``searched_gate.py`` is written.
        log (Callable): Where the phase lines go (every line, the steps'
            too, is also appended to ``work_dir/search.log``). Defaults to
            ``print``.
        progress (Callable, optional): Called with (steps done, steps in
            all) after each search step, e.g. to draw a progress bar.
    """

    def __init__(self,
                 cfg: Config,
                 config_path: str,
                 work_dir: str,
                 overrides: Mapping = {},
                 gate_config: Optional[str] = None,
                 log: Callable[[str], None] = print,
                 progress: Optional[Callable[[int, int], None]] = None) -> None:
        self.options = opts = search_options(cfg.get('search'), overrides)
        self.cfg = cfg
        self.config_path = osp.abspath(config_path)
        self.gate_config = gate_config and osp.abspath(gate_config)
        self.work_dir = work_dir
        self._print = log
        self.progress = progress
        torch.manual_seed(opts['seed'])
        # every DS op initialises itself when built
        self.model = build_model_from_cfg(cfg)
        if opts['load_from']:
            # e.g. a converted ImageNet ResNet-18: base training then only
            # has to learn the noise scales
            load_checkpoint(self.model, opts['load_from'], map_location='cpu',
                            strict=False)
        space = self.model.backbone.space
        self.start = dict(space[-1])
        groups = opts['search_groups'] or [
            g for g in space.groups if space.smallest[g] != space[-1][g]]
        check_search_args(self.start, groups, opts['groups'],
                          opts['min_ratio'])
        self.groups = list(groups)
        self.axes = classifier_axes(self.model)
        # fails before any work: a held-out split too large
        self.train_batches, self.held_out, self.num_train = search_data(
            cfg, opts['held_out'], opts['seed'])
        self.input_shape = tuple(self.model.data_preprocessor(
            self.held_out[0], False)['inputs'].shape[1:])
        self.state_path = osp.join(work_dir, STATE)

    def _append(self, line: str) -> None:
        with open(osp.join(self.work_dir, 'search.log'), 'a') as f:
            f.write(f'{time.strftime("%Y-%m-%d %H:%M:%S")} {line}\n')

    def log(self, line: str) -> None:
        self._append(line)
        self._print(line)

    # --- phase 1: base training -----------------------------------------
    def _base(self, state: Optional[dict]) -> Dict[str, torch.Tensor]:
        opts = self.options
        noisy = opts['ranking'] == 'noise'
        if noisy:
            add_channel_noise(self.model, self.axes)
        optimizer = sgd(self.model, opts['base_lr'],
                        opts['base_weight_decay'])
        epoch = 0
        if state is not None:
            self.model.load_state_dict(state['model'])
            optimizer.load_state_dict(state['optimizer'])
            torch.set_rng_state(state['rng'])
            epoch = state['epoch']
        epochs = opts['base_epochs']
        per_epoch = len(self.train_batches(0))
        total = max(1, epochs * per_epoch)
        while epoch < epochs:
            begin = time.time()
            offset = epoch * per_epoch

            def lr_at(i: int, offset=offset) -> float:
                return opts['base_lr'] * 0.5 * (
                    1 + math.cos(math.pi * (offset + i) / total))

            train_at(self.model, self.start,
                     self.train_batches(opts['seed'] * 1_009 + epoch),
                     optimizer, per_epoch, lr_at=lr_at)
            epoch += 1
            _save(dict(phase='base', epoch=epoch, options=opts,
                       model=self.model.state_dict(),
                       optimizer=optimizer.state_dict(),
                       rng=torch.get_rng_state()), self.state_path)
            self.log(f'base training ({opts["ranking"]}): epoch '
                     f'{epoch}/{epochs} in {time.time() - begin:.1f}s')
        scope = opts['ranking_scope']
        if noisy:
            alphas = channel_alphas(self.model, self.axes) \
                if opts['keep_noise'] else \
                remove_channel_noise(self.model, self.axes)
            return noise_scores(self.axes, alphas, opts['noise_order'], scope)
        return l1_scores(self.model, self.axes, scope)

    # --- the whole search --------------------------------------------------
    def _new_search(self) -> ProgressiveSearch:
        o = self.options
        return ProgressiveSearch(
            self.model, self.held_out, self.train_batches, self.start,
            self.groups, self.input_shape, num_groups=o['groups'],
            min_ratio=o['min_ratio'], threshold=o['threshold'],
            finetune_iters=o['finetune_iters'],
            finetune_lr=o['finetune_lr'],
            check_interval=o['check_interval'], criterion=o['criterion'],
            step_rule=o['step_rule'], noisy_scoring=o['keep_noise'],
            seed=o['seed'])

    def run(self, max_steps: Optional[int] = None) -> Optional[dict]:
        """Run or resume; returns the outputs' paths, or None when
        ``max_steps`` stopped the search first."""
        os.makedirs(self.work_dir, exist_ok=True)
        state = None
        if osp.exists(self.state_path):
            state = torch.load(self.state_path, map_location='cpu',
                               weights_only=True)
            if state.get('options') not in (None, self.options):
                raise ValueError(
                    f'{self.state_path} was written by a search with other '
                    f"options ({state['options']}); use another work dir "
                    'or the same options')
            self.log(f'resuming from {self.state_path} ({state["phase"]})')
        search = self._new_search()
        if state is None or state['phase'] == 'base':
            scores = self._base(state)
            permute_channels(self.model, self.axes, ranking_perms(scores))
            state = None
        else:
            if self.options['keep_noise']:
                add_channel_noise(self.model, self.axes)
            search.load_state_dict(state['search'])
        begin = time.time()
        total = search.total_steps()

        def on_step(record: dict) -> None:
            _save(dict(phase='search', options=self.options,
                       search=search.state_dict()), self.state_path)
            tuned = (f", fine-tuned {record['finetune_iters']} steps"
                     if record['fine_tuned'] else '')
            self._append(f"[{record['step'] + 1}/{total}] "
                     f"-{record['removed'] or 'none'}: "
                     f"{record['madds'] / 1e6:.2f}M MAdds, top-1 "
                     f"{record['score']:.2f}{tuned}; "
                     f'{search.evaluations} evaluations, '
                     f'{time.time() - begin:.0f}s')
            if self.progress is not None:
                self.progress(record['step'] + 1, total)

        search.run(max_steps, on_step)
        if not search.done:
            return None
        return self._write(search)

    # --- phase 4: outputs -------------------------------------------------
    def _write(self, search: ProgressiveSearch) -> Dict[str, str]:
        o = self.options
        kept = reselect(search.trajectory, o['num_keep'])
        # Stage I's list: the kept points, or every point of the filtered
        # trajectory (its Pareto front and both ends)
        trained = kept if o['stage1_list'] == 'kept' else sorted(
            {0, len(search.trajectory) - 1,
             *pareto_front(search.trajectory)})
        searched = subnet_list(search.trajectory, trained)
        uniform = self.matched_uniform(
            [search.trajectory[i]['madds'] for i in reversed(trained)],
            search.min_widths)
        out = {k: osp.join(self.work_dir, f) for k, f in dict(
            trajectory='trajectory.json', subnets='subnets.json',
            plot='trajectory.png', searched='searched.py',
            uniform='uniform.py').items()}
        record = dict(config=self.config_path, options=o, groups=self.groups,
                      threshold=o['threshold'], start=self.start,
                      min_widths=search.min_widths,
                      evaluations=search.evaluations,
                      num_held_out=sum(len(b['data_samples'])
                                       for b in self.held_out),
                      input_shape=list(self.input_shape),
                      steps=search.trajectory, kept=kept, trained=trained)
        with open(out['trajectory'], 'w') as f:
            json.dump(record, f, indent=1)
        with open(out['subnets'], 'w') as f:
            json.dump(dict(searched=searched, uniform=uniform), f, indent=1)
        _write_config(out['searched'], self.config_path,
                      dict(backbone=dict(subnets=searched),
                           **self.mapped_label_weights(searched)))
        _write_config(out['uniform'], self.config_path,
                      dict(backbone=dict(subnets=uniform), sampling='usnet',
                           usnet_divisor=o['divisor'],
                           **self.mapped_label_weights(uniform)))
        if self.gate_config:
            out['searched_gate'] = osp.join(self.work_dir, 'searched_gate.py')
            _write_config(out['searched_gate'], self.gate_config,
                          dict(backbone=dict(
                              subnets=searched,
                              gate=dict(window=self.mapped_window(
                                  searched)))))
        from dsnet_mm.analysis.search_report import plot_trajectory
        plot_trajectory(record, out['plot'])
        return out

    def mapped_window(self, searched: Sequence[Mapping[str, int]]) -> tuple:
        """The gate config's routing window carried over to the searched
        list: from the searched sub-network nearest in MAdds to the first of
        the window, to the one nearest to its last."""
        gate_cfg = Config.fromfile(self.gate_config).model.backbone
        start, size = gate_cfg.gate.window
        space = SubnetSpace(self.model.backbone.space.max_widths,
                            gate_cfg.subnets)
        madds = self._madds(searched)
        first, last = (_nearest(madds, m) for m in self._madds(
            [space[start], space[start + size - 1]]))
        return (first, max(1, last - first + 1))

    def mapped_label_weights(self,
                             subnets: Sequence[Mapping[str, int]]) -> dict:
        """The config's per-sub-network ``student_label_weight`` carried
        over to another list (``{}`` when the config gives one weight for
        every width). Nearness is in MAdds, as for :meth:`mapped_window`: a
        member that is the nearest to some of the config's sub-networks
        takes the largest of their weights (so the member the window's
        narrow end is carried to learns as that end does), any other member
        the weight of the config's sub-network nearest to it; the list's
        smallest and widest keep the config's ends' weights."""
        weights = self.model.student_label_weights
        if len(set(weights)) == 1:
            return {}
        ladder = self._madds(self.model.backbone.space)
        madds = self._madds(subnets)
        mapped = [weights[_nearest(ladder, m)] for m in madds]
        hits: Dict[int, List[float]] = {}
        for j, m in enumerate(ladder):
            hits.setdefault(_nearest(madds, m), []).append(weights[j])
        for i, found in hits.items():
            mapped[i] = max(found)
        mapped[0], mapped[-1] = weights[0], weights[-1]
        return dict(student_label_weight=mapped)

    def _madds(self, subnets: Sequence[Mapping[str, int]]) -> List[int]:
        """MAdds of each width vector at the search's input shape."""
        return [madds_at(self.model, w, self.input_shape) for w in subnets]

    def matched_uniform(self, targets: Sequence[int],
                        min_widths: Mapping[str, int]
                        ) -> List[Dict[str, int]]:
        """The uniform (one ratio) width vectors between the searched
        minimum and the start whose MAdds are nearest to each target,
        narrowest first, duplicates dropped."""
        return matched_uniform(self.model, self.start, min_widths, targets,
                               self.options['divisor'], self.input_shape)


def matched_uniform(model, start: Mapping[str, int],
                    min_widths: Mapping[str, int], targets: Sequence[int],
                    divisor: int, input_shape: Sequence[int]
                    ) -> List[Dict[str, int]]:
    """The uniform (one ratio ``t`` for every group, from ``min_widths`` to
    ``start``, rounded to ``divisor``) width vectors of ``model`` whose
    MAdds on ``input_shape`` images are nearest to each target, narrowest
    first, duplicates dropped."""
    ladder = SubnetSpace(model.backbone.space.max_widths,
                         [{**start, **min_widths}, dict(start)])
    shape = tuple(input_shape)

    def madds(t: float) -> int:
        return madds_at(model, ladder.interpolate(t, divisor), shape)

    out = []
    for target in targets:
        a, b = 0.0, 1.0
        for _ in range(30):  # MAdds grow with t: bisection
            mid = (a + b) / 2
            a, b = (mid, b) if madds(mid) < target else (a, mid)
        t = min((a, b), key=lambda t: abs(madds(t) - target))
        widths = ladder.interpolate(t, divisor)
        if not out or widths != out[-1]:
            out.append(widths)
    return out


def _nearest(values: Sequence[int], target: int) -> int:
    """Index of the value nearest to ``target`` (the first of a tie)."""
    return min(range(len(values)), key=lambda i: abs(values[i] - target))


def _write_config(path: str, base: str, model: dict) -> None:
    with open(path, 'w') as f:
        f.write('# Written by tools/search_subnets.py\n'
                f'_base_ = [{base!r}]\n'
                f'model = {model!r}\n')


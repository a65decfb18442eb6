# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The progressive greedy sub-network search (large to small).

From the widest width vector, each step tries, for every searched group not
yet at its minimum, removing its next channel group (``G`` groups per width
group: the widths ``round(w * (G - k) / G)``, never below
``ceil(min_ratio * w)``), scores each candidate on a held-out part of the
*training* split, and commits the removal that costs least: the best score
(highest top-1, or lowest loss; ``step_rule='best'``, the paper's), or the
smallest score drop per MAdd saved (``'cost'``; drops below zero count as
zero, and ties go to the larger saving). Channels were reordered by
importance before
(:mod:`dsnet_mm.search.channels`), so a removal drops the least important
remaining channels. When the committed sub-network's top-1 falls below the
fine-tuning threshold it is fine-tuned (at its widths, the head's loss) for
at most ``finetune_iters`` steps, checked every ``check_interval`` steps,
until it is above again. Every step is logged (widths, MAdds, score,
removed group, fine-tuning).

The state after each step (:meth:`ProgressiveSearch.state_dict`: weights,
widths, trajectory, counters) is what a killed search resumes from; every
random choice (the fine-tuning data order) is seeded by the step, so a
resumed search equals an uninterrupted one.
"""
import math
from typing import Callable, Dict, Iterable, Iterator, List, Optional, \
    Sequence, Tuple

import torch
import torch.nn as nn

from dsnet_mm.ops.utils import check_float, check_int
from .training import Widths, evaluate_at, madds_at, sgd, train_at

CRITERIA = ('accuracy', 'loss')
STEP_RULES = ('best', 'cost')


class ProgressiveSearch:
    """Greedy channel-group removal with selective fine-tuning.

    Args:
        model (nn.Module): An mmpretrain classifier over a DS backbone, its
            channels already ranked (most important first in every group).
        held_out (Sequence[dict]): Batches of the held-out part of the
            training split, scored at every candidate.
        train_batches (Callable[[int], Iterable[dict]]): One epoch of
            training batches (the rest of the training split) in the order
            seeded by the argument; fine-tuning reads from it.
        start (Mapping[str, int]): The widest width vector, where the search
            starts.
        groups (Sequence[str]): The searched width groups (others keep their
            ``start`` width).
        input_shape (tuple): (C, H, W) of an image, for MAdds.
        num_groups (int): ``G``, channel groups per width group.
            Defaults to 8.
        min_ratio (float): Each searched group stops at
            ``ceil(min_ratio * start)``, in (0, 1]. Defaults to 0.25.
        threshold (float): Fine-tune when top-1 (%) falls below it; None
            never fine-tunes. Defaults to 40.0.
        finetune_iters (int): Fine-tuning budget (steps) per event.
            Defaults to 100.
        finetune_lr (float): SGD learning rate of fine-tuning.
            Defaults to 0.01.
        check_interval (int): Held-out check every this many fine-tuning
            steps. Defaults to 20.
        criterion (str): ``'accuracy'`` (highest top-1) or ``'loss'``
            (lowest held-out cross-entropy) picks the removal.
            Defaults to ``'accuracy'``.
        step_rule (str): ``'best'`` (the best score) or ``'cost'`` (the
            smallest score drop per MAdd saved) picks the removal.
            Defaults to ``'best'``.
        noisy_scoring (bool): Score with the ranking noise on (the model
            carries it, ``keep_noise``), each evaluation's draw seeded by
            the search seed and its count. Defaults to False.
        seed (int): Seeds the fine-tuning data order. Defaults to 0.
    """

    def __init__(self,
                 model: nn.Module,
                 held_out: Sequence[dict],
                 train_batches: Callable[[int], Iterable[dict]],
                 start: Widths,
                 groups: Sequence[str],
                 input_shape: Tuple[int, ...],
                 num_groups: int = 8,
                 min_ratio: float = 0.25,
                 threshold: Optional[float] = 40.0,
                 finetune_iters: int = 100,
                 finetune_lr: float = 0.01,
                 check_interval: int = 20,
                 criterion: str = 'accuracy',
                 step_rule: str = 'best',
                 noisy_scoring: bool = False,
                 seed: int = 0) -> None:
        check_search_args(start, groups, num_groups, min_ratio)
        check_int('finetune_iters', finetune_iters, 1)
        check_int('check_interval', check_interval, 1)
        if criterion not in CRITERIA:
            raise ValueError(f'criterion must be one of {CRITERIA}, got '
                             f'{criterion!r}')
        if step_rule not in STEP_RULES:
            raise ValueError(f'step_rule must be one of {STEP_RULES}, got '
                             f'{step_rule!r}')
        self.model = model
        self.held_out = held_out
        self.train_batches = train_batches
        self.groups = list(groups)
        self.input_shape = tuple(input_shape)
        self.num_groups = num_groups
        self.threshold = threshold
        self.finetune_iters = finetune_iters
        self.finetune_lr = finetune_lr
        self.check_interval = check_interval
        self.criterion = criterion
        self.step_rule = step_rule
        self.noisy_scoring = noisy_scoring
        self.seed = seed
        self.start = dict(start)
        self.min_widths = {
            g: max(1, math.ceil(min_ratio * start[g] - 1e-9))
            for g in self.groups
        }
        self.widths = dict(start)
        self.trajectory: List[dict] = []
        self.evaluations = 0

    # --- the space of one step ----------------------------------------
    def next_width(self, group: str) -> Optional[int]:
        """The width of ``group`` after removing its next channel group, or
        None at its minimum."""
        width, top = self.widths[group], self.start[group]
        floor = self.min_widths[group]
        if width <= floor:
            return None
        levels = [round(top * (self.num_groups - k) / self.num_groups)
                  for k in range(self.num_groups + 1)]
        below = [w for w in levels if w < width]
        return max(max(below), floor)

    def candidates(self) -> List[Tuple[str, Dict[str, int]]]:
        """(group, width vector) of every removal possible now."""
        out = []
        for group in self.groups:
            width = self.next_width(group)
            if width is not None:
                out.append((group, {**self.widths, group: width}))
        return out

    @property
    def done(self) -> bool:
        return bool(self.trajectory) and not self.candidates()

    # --- scoring and fine-tuning --------------------------------------
    def evaluate(self, widths: Widths) -> Dict[str, float]:
        """Held-out top-1 and loss of ``widths`` (one evaluation)."""
        self.evaluations += 1
        noise_seed = (self.seed * 1_000_003 + self.evaluations) \
            if self.noisy_scoring else None
        return evaluate_at(self.model, self.held_out, widths, noise_seed)

    def _key(self, score: Dict[str, float]) -> float:
        return score['accuracy'] if self.criterion == 'accuracy' \
            else -score['loss']

    def _cycle(self, step: int) -> Iterator[dict]:
        epoch = 0
        while True:
            batches = iter(self.train_batches(
                (self.seed * 1_000_003 + step) * 1_009 + epoch))
            first = next(batches, None)
            if first is None:
                raise ValueError('the training split yielded no batches')
            yield first
            yield from batches
            epoch += 1

    def finetune(self, widths: Widths, score: Dict[str, float],
                 step: int) -> Tuple[int, Dict[str, float]]:
        """Fine-tune at ``widths`` until top-1 reaches the threshold or the
        budget is spent; returns (steps taken, the new score)."""
        optimizer = sgd(self.model, self.finetune_lr)
        result = dict(score=score)

        def stop(done: int) -> bool:
            if done % self.check_interval and done < self.finetune_iters:
                return False
            result['score'] = self.evaluate(widths)
            return result['score']['accuracy'] >= self.threshold

        # the noise drawn in training (with noisy_scoring) repeats with the
        # step, so a resumed search fine-tunes as an uninterrupted one
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + 7_919 * step)
            iters = train_at(self.model, widths, self._cycle(step),
                             optimizer, self.finetune_iters, stop=stop)
        return iters, result['score']

    def _record(self, widths: Widths, score: Dict[str, float],
                removed: Optional[str], finetune_iters: int) -> dict:
        record = dict(
            step=len(self.trajectory),
            widths=dict(widths),
            madds=madds_at(self.model, widths, self.input_shape),
            score=score['accuracy'],
            loss=score['loss'],
            removed=removed,
            fine_tuned=finetune_iters > 0,
            finetune_iters=finetune_iters,
            evaluations=self.evaluations)
        self.trajectory.append(record)
        return record

    # --- the search -----------------------------------------------------
    def step(self) -> dict:
        """One search step (the first scores the start); returns its log."""
        if not self.trajectory:
            return self._record(self.widths, self.evaluate(self.widths),
                                None, 0)
        candidates = self.candidates()
        if not candidates:
            raise RuntimeError('the search is done: every searched group is '
                               'at its minimum width')
        scored = [(group, widths, self.evaluate(widths))
                  for group, widths in candidates]
        if self.step_rule == 'cost':
            group, widths, score = self._cheapest(scored)
        else:
            # the first best in group order wins a tie (deterministic)
            group, widths, score = max(
                scored, key=lambda c: self._key(c[2]))
        self.widths = widths
        iters = 0
        if self.threshold is not None and score['accuracy'] < self.threshold:
            iters, score = self.finetune(widths, score, len(self.trajectory))
        return self._record(widths, score, group, iters)

    def _cheapest(self, scored: List[tuple]) -> tuple:
        """The candidate of the smallest score drop per MAdd saved, from the
        committed point (drops below zero count as zero); a tie goes to the
        larger saving, then to the first in group order."""
        last = self.trajectory[-1]
        now = self._key(dict(accuracy=last['score'], loss=last['loss']))

        def rank(candidate: tuple) -> Tuple[float, int]:
            saving = max(1, last['madds'] - madds_at(
                self.model, candidate[1], self.input_shape))
            drop = max(0.0, now - self._key(candidate[2]))
            return drop / saving, -saving

        return min(scored, key=rank)

    def run(self, max_steps: Optional[int] = None,
            on_step: Optional[Callable[[dict], None]] = None) -> List[dict]:
        """Step until done (or ``max_steps`` more steps); ``on_step`` gets
        each step's log after it (e.g. to save the state)."""
        taken = 0
        while not self.done and (max_steps is None or taken < max_steps):
            record = self.step()
            taken += 1
            if on_step is not None:
                on_step(record)
        return self.trajectory

    def total_steps(self) -> int:
        """Steps of a whole search (the start included)."""
        steps = 1
        for group in self.groups:
            widths, self.widths = self.widths, dict(self.start)
            while True:
                width = self.next_width(group)
                if width is None:
                    break
                self.widths[group] = width
                steps += 1
            self.widths = widths
        return steps

    # --- resuming --------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed search needs (weights-only loadable)."""
        return dict(
            widths=dict(self.widths),
            trajectory=[dict(r) for r in self.trajectory],
            evaluations=self.evaluations,
            model=dict(backbone=self.model.backbone.state_dict(),
                       head=self.model.head.state_dict()))

    def load_state_dict(self, state: dict) -> None:
        self.model.backbone.load_state_dict(state['model']['backbone'])
        self.model.head.load_state_dict(state['model']['head'])
        self.widths = dict(state['widths'])
        self.trajectory = [dict(r) for r in state['trajectory']]
        self.evaluations = int(state['evaluations'])


def check_search_args(start: Widths, groups: Sequence[str], num_groups: int,
                      min_ratio: float) -> None:
    """Fail before any work on options the search cannot run with."""
    check_int('groups (G)', num_groups, 1)
    check_float('min_ratio', min_ratio, 0, 1, low_open=True)
    if not groups:
        raise ValueError('search groups must name at least one width group')
    unknown = [g for g in groups if g not in start]
    if unknown:
        raise ValueError(f'search groups {unknown} are not width groups; '
                         f'allowed: {sorted(start)}')
    narrow = {g: start[g] for g in groups if start[g] < num_groups}
    if narrow:
        raise ValueError(
            f'groups (G={num_groups}) is larger than the width of the '
            f'searched group(s) {narrow}: a channel group would be empty')

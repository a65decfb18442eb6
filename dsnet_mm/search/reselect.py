# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Sub-network re-selection ("subnet filtering") from a search trajectory.

The trajectory is one chain of ever narrower width vectors, so any subset is
a valid nested sub-network list. Re-selection keeps ``K`` of them: both ends
always (the widest and the narrowest), and in between only points on the
Pareto front of (fewer MAdds, higher score), each the free front point
nearest to one of ``K - 2`` MAdds targets evenly spaced between the ends.

Scores are comparable only between points scored by the same weights: a
step that fine-tuned (``fine_tuned``) scored a network trained further than
the points before it, whose lower scores say nothing about their own widths
against it. So a point is dominated only by a point of its own segment (a
fine-tuned step and the steps after it up to the next fine-tuning); with
fine-tuning at every step, nothing is filtered and the targets alone choose.
"""
from typing import Dict, List, Mapping, Sequence


def segments(trajectory: Sequence[Mapping]) -> List[int]:
    """The segment of each point: the position of the last step at or
    before it that fine-tuned (0 before any); points of one segment were
    scored by the same weights."""
    seg, current = [], 0
    for i, p in enumerate(trajectory):
        if p.get('fine_tuned', False):
            current = i
        seg.append(current)
    return seg


def pareto_front(trajectory: Sequence[Mapping]) -> List[int]:
    """Positions of the points that no point of their segment (see
    :func:`segments`) dominates (as cheap or cheaper and as good or better,
    one of them strictly)."""
    seg = segments(trajectory)
    front = []
    for i, p in enumerate(trajectory):
        dominated = any(
            seg[j] == seg[i] and
            q['madds'] <= p['madds'] and q['score'] >= p['score'] and
            (q['madds'] < p['madds'] or q['score'] > p['score'])
            for j, q in enumerate(trajectory))
        if not dominated:
            front.append(i)
    return front


def reselect(trajectory: Sequence[Mapping], num_keep: int) -> List[int]:
    """Positions (in the trajectory, widest first) of the kept points.

    Args:
        trajectory (Sequence[Mapping]): Search steps with ``madds`` and
            ``score``, widest first.
        num_keep (int): ``K``, at least 2. Fewer are kept when the front
            has fewer points.

    Returns:
        list[int]: Sorted positions, always holding the first and the last.
    """
    if not isinstance(num_keep, int) or num_keep < 2:
        raise ValueError(f'num_keep (K) must be an int >= 2, got '
                         f'{num_keep!r}')
    if len(trajectory) < 2:
        raise ValueError('re-selection needs a trajectory of at least two '
                         f'steps, got {len(trajectory)}')
    first, last = 0, len(trajectory) - 1
    free = [i for i in pareto_front(trajectory) if i not in (first, last)]
    hi, lo = trajectory[first]['madds'], trajectory[last]['madds']
    kept = {first, last}
    slots = num_keep - 2
    for k in range(1, slots + 1):
        if not free:
            break
        target = lo + (hi - lo) * k / (slots + 1)
        best = min(free, key=lambda i: abs(trajectory[i]['madds'] - target))
        kept.add(best)
        free.remove(best)
    return sorted(kept)


def subnet_list(trajectory: Sequence[Mapping],
                kept: Sequence[int]) -> List[Dict[str, int]]:
    """The kept width vectors as a ``subnets=`` list (narrowest first)."""
    return [dict(trajectory[i]['widths']) for i in sorted(kept, reverse=True)]

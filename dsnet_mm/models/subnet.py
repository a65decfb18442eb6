# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Width groups and sub-network specs: the one idea everything reads.

A supernet declares **width groups**: sets of layers whose channel counts
move together (a stage's stream, a conv and its BN, the classifier input).
A **sub-network** is one width per group. A :class:`SubnetSpace` holds the
widest width of each group and an ordered list of sub-networks, narrowest
first (the list the gate indexes into), plus the separate ``largest``
architecture (every group at its widest) that serves as the in-place teacher.
Slicing, MAdds counting, BN statistics rows, sampling and export all read the
same :class:`SubnetSpec` objects.
"""
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Union

from dsnet_mm.ops.utils import check_int, check_type

SubnetsCfg = Union[Mapping, Sequence[Mapping]]


def check_subnets_cfg(field: str, subnets) -> None:
    """Raise a TypeError naming ``field`` unless ``subnets`` is a ladder
    dict or a list of width dicts (see :class:`SubnetSpace`)."""
    check_type(field, subnets, (Mapping, list, tuple),
               'a ladder dict(smallest=..., widest=..., num=...) or a list '
               'of width dicts')
    if not isinstance(subnets, Mapping):
        for k, widths in enumerate(subnets):
            check_type(f'{field}[{k}]', widths, Mapping, 'a dict of widths')


class SubnetSpec(Mapping):
    """One sub-network: a width per group, and its row in the BN statistics.

    Attributes ``stats`` (int: the statistics row a ``DSBatchNorm2d``
    normalises it with) and ``position`` (int: its place in the space's list,
    ``space[position]``, or ``len(subnets)`` for the largest; None for an
    ad-hoc sub-network, which has none).

    Args:
        widths (Mapping[str, int]): Width of every group.
        stats (int): The BN statistics row; for a listed sub-network and the
            largest also its position.
        name (str): A readable name, e.g. ``'subnet_3'`` or ``'largest'``.
        adhoc (bool): Not in the list: a width vector the search or US-Net
            sampling visits (see :meth:`SubnetSpace.adhoc`); its
            ``position`` is None. Defaults to False.
    """

    def __init__(self, widths: Mapping[str, int], stats: int,
                 name: str, adhoc: bool = False) -> None:
        self._widths = dict(widths)
        self.stats = stats
        self.position: Optional[int] = None if adhoc else stats
        self.name = name
        self.adhoc = adhoc

    def __getitem__(self, group: str) -> int:
        return self._widths[group]

    def __iter__(self) -> Iterator[str]:
        return iter(self._widths)

    def __len__(self) -> int:
        return len(self._widths)

    def __repr__(self) -> str:
        widths = ', '.join(f'{k}={v}' for k, v in self._widths.items())
        return f'SubnetSpec({self.name}: {widths})'

    def mask(self, x, group: str):
        """Channel masking hook of per-sample routing: a no-op here."""
        return x

    def pre_act_mask(self, group: str) -> None:
        """The mask of per-sample routing before an activation (see
        :class:`~dsnet_mm.models.routing.MaskedRouting`): none here."""
        return None


SubnetKey = Union[int, str, SubnetSpec]
"""How a sub-network is named: its position, its name or its spec (see
:meth:`SubnetSpace.get`)."""


class SubnetSpace:
    """The width groups of a supernet and its ordered sub-networks.

    Args:
        max_widths (Mapping[str, int]): Widest width of every group (what the
            weights are stored at).
        subnets (Mapping | Sequence[Mapping]): Either an explicit list of
            sub-networks (each a mapping from every group to its width,
            narrowest first), or a uniform ladder
            ``dict(smallest={...}, widest={...}, num=N)`` whose sub-network
            ``k`` puts every group at
            ``smallest + k * (widest - smallest) / (N - 1)`` (each step must be
            whole). DS-MobileNetV1's 14 sub-networks are such a ladder.
        field (str): Config field name used in error messages.
            Defaults to ``'subnets'``.
        skippable (Sequence[str]): Groups that may also be 0 wide (a
            transformer branch that is then an identity). Defaults to ().
        choices (Mapping[str, Sequence[int]], optional): Groups whose value
            is one of a few choices rather than any width up to the widest
            (kernel sizes); the largest choice must be the group's max
            width. A ladder puts such a group at the choice nearest its
            even step (ties to the smaller). Defaults to None.
    """

    def __init__(self,
                 max_widths: Mapping[str, int],
                 subnets: SubnetsCfg,
                 field: str = 'subnets',
                 skippable: Sequence[str] = (),
                 choices: Optional[Mapping[str, Sequence[int]]] = None
                 ) -> None:
        self.max_widths = dict(max_widths)
        self.field = field
        self.skippable = frozenset(skippable)
        for group, width in self.max_widths.items():
            check_int(f'max width of group {group!r}', width, 1)
        self.choices = {g: tuple(sorted(c)) for g, c in (choices or {}).items()}
        for group, values in self.choices.items():
            if group not in self.max_widths or \
                    values[-1] != self.max_widths[group]:
                raise ValueError(
                    f'choices of group {group!r} ({list(values)}) must end '
                    'at its max width '
                    f'{self.max_widths.get(group, "(unknown group)")}')
        check_subnets_cfg(field, subnets)
        if isinstance(subnets, Mapping):
            widths = self._ladder(subnets)
        else:
            widths = [dict(w) for w in subnets]
        if not widths:
            raise ValueError(f'{field} must hold at least one sub-network')
        for k, w in enumerate(widths):
            self._check(w, f'{field}[{k}]')
        for k in range(1, len(widths)):
            self._check_order(widths[k - 1], widths[k], k)
        self.subnets: List[SubnetSpec] = [
            SubnetSpec(w, k, f'subnet_{k}') for k, w in enumerate(widths)
        ]
        self.largest = SubnetSpec(self.max_widths, len(widths), 'largest')

    @property
    def groups(self) -> List[str]:
        return list(self.max_widths)

    @property
    def smallest(self) -> SubnetSpec:
        return self.subnets[0]

    @property
    def num_stats(self) -> int:
        """Number of BN statistics rows: every sub-network and the largest."""
        return len(self.subnets) + 1

    def __len__(self) -> int:
        return len(self.subnets)

    def __getitem__(self, index: int) -> SubnetSpec:
        return self.subnets[index]

    def adhoc(self, widths: Mapping[str, int], stats: Optional[int] = None,
              name: str = 'adhoc') -> SubnetSpec:
        """A sub-network outside the list (every group within its stored
        widths), normalised with statistics row ``stats`` (default: the
        narrowest listed sub-network at least as wide in every group, else
        the largest's)."""
        self._check(widths, name)
        if stats is None:
            stats = next((s.stats for s in self.subnets
                          if all(s[g] >= widths[g] for g in self.groups)),
                         self.largest.stats)
        if not 0 <= stats < self.num_stats:
            raise ValueError(f'stats row {stats} is outside '
                             f'0..{self.num_stats - 1}')
        return SubnetSpec(widths, stats, name, adhoc=True)

    def interpolate(self, t: float, divisor: int = 1) -> Dict[str, int]:
        """The uniform width vector at ``t`` in [0, 1] from the smallest to
        the widest sub-network: every group at ``smallest + t * (widest -
        smallest)`` rounded to a multiple of ``divisor`` (US-Net's one width
        ratio for every group, when the smallest is a ratio of the widest),
        kept within the two."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f't must be in [0, 1], got {t}')
        lo, hi = self.smallest, self.subnets[-1]
        widths = {}
        for g in self.groups:
            w = lo[g] + t * (hi[g] - lo[g])
            if g in self.choices:
                widths[g] = self._nearest_choice(g, w, lo[g], hi[g])
                continue
            w = int(round(w / divisor)) * divisor
            widths[g] = min(max(w, lo[g]), hi[g])
        return widths

    def _nearest_choice(self, group: str, value: float, lo: int,
                        hi: int) -> int:
        """The choice of ``group`` within ``lo..hi`` nearest to ``value``
        (ties to the smaller)."""
        return min((c for c in self.choices[group] if lo <= c <= hi),
                   key=lambda c: (abs(c - value), c))

    def get(self, key: SubnetKey) -> SubnetSpec:
        """Look a sub-network up by position, name or spec (an ad-hoc spec is
        checked against the stored widths)."""
        if isinstance(key, SubnetSpec) and key.adhoc:
            return self.adhoc(key, key.stats, key.name)
        if isinstance(key, SubnetSpec):
            if key.position == self.largest.position:
                return self.largest
            if 0 <= key.position < len(self) and \
                    dict(self.subnets[key.position]) == dict(key):
                return self.subnets[key.position]
            raise ValueError(f'{key} is not a sub-network of this space')
        if isinstance(key, str):
            names = {s.name: s for s in [*self.subnets, self.largest]}
            names['smallest'] = self.smallest
            if key not in names:
                raise ValueError(
                    f'unknown sub-network {key!r}; allowed: '
                    f"'largest', 'smallest' or 'subnet_0'..'subnet_"
                    f"{len(self) - 1}'")
            return names[key]
        if isinstance(key, int) and not isinstance(key, bool) and \
                -len(self) <= key < len(self):
            return self.subnets[key]
        raise ValueError(f'sub-network index {key!r} is outside '
                         f'0..{len(self) - 1}')

    def _ladder(self, cfg: Mapping) -> List[Dict[str, int]]:
        unknown = set(cfg) - {'smallest', 'widest', 'num'}
        if unknown or not {'smallest', 'widest', 'num'} <= set(cfg):
            raise ValueError(
                f'{self.field} as a ladder needs exactly the keys '
                f"'smallest', 'widest' and 'num', got {sorted(cfg)}")
        num = cfg['num']
        check_int(f'{self.field}.num', num, 1)
        for key in ('smallest', 'widest'):
            check_type(f'{self.field}.{key}', cfg[key], Mapping,
                       'a dict of widths')
        lo, hi = dict(cfg['smallest']), dict(cfg['widest'])
        self._check(lo, f'{self.field}.smallest')
        self._check(hi, f'{self.field}.widest')
        ladder = [dict() for _ in range(num)]
        for group in self.max_widths:
            span = hi[group] - lo[group]
            if span < 0:
                raise ValueError(
                    f'{self.field}: group {group!r} must not narrow from '
                    f'smallest ({lo[group]}) to widest ({hi[group]})')
            if group in self.choices:
                for k in range(num):
                    ladder[k][group] = self._nearest_choice(
                        group, lo[group] + k * span / max(num - 1, 1),
                        lo[group], hi[group])
                continue
            if num > 1 and span % (num - 1):
                raise ValueError(
                    f'{self.field}: group {group!r} cannot step from '
                    f'{lo[group]} to {hi[group]} in {num - 1} whole steps')
            step = span // (num - 1) if num > 1 else 0
            for k in range(num):
                ladder[k][group] = lo[group] + k * step
        return ladder

    def _check(self, widths: Mapping[str, int], field: str) -> None:
        unknown = [g for g in widths if g not in self.max_widths]
        if unknown:
            raise ValueError(f'{field} names unknown width group(s) '
                             f'{unknown}; allowed groups: {self.groups}')
        missing = [g for g in self.max_widths if g not in widths]
        if missing:
            raise ValueError(f'{field} lacks width group(s) {missing}; '
                             f'every sub-network sets all of {self.groups}')
        for group, width in widths.items():
            if group in self.choices:
                if width not in self.choices[group]:
                    raise ValueError(
                        f'{field}.{group}={width!r} is not one of the '
                        f'choices {list(self.choices[group])}')
                continue
            # 0: a skippable branch is then an identity
            check_int(f'{field}.{group}', width,
                      0 if group in self.skippable else 1,
                      self.max_widths[group])

    def _check_order(self, prev: Mapping[str, int], cur: Mapping[str, int],
                     k: int) -> None:
        narrower = [g for g in self.groups if cur[g] < prev[g]]
        if narrower or cur == prev:
            detail = ', '.join(f'{g}: {prev[g]} -> {cur[g]}'
                               for g in narrower) or 'identical widths'
            raise ValueError(
                f'{self.field}[{k}] is not wider than {self.field}[{k - 1}] '
                f'({detail}); sub-networks must be ordered narrowest first, '
                'every group non-decreasing and at least one growing')

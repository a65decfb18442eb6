# Copyright (c) dsnet_mm contributors. All rights reserved.
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from mmengine.dist import broadcast_object_list, is_main_process
from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS


def level_of(sample: dict):
    """The difficulty level a data sample carries, or None (see
    :mod:`dsnet_mm.datasets.graded_digits`)."""
    level = sample.get('level')
    return None if level is None else int(level)


def subnet_name(index: int) -> str:
    """The name of the sub-network at ``index`` of the sub-network list."""
    return f'subnet_{index}'


@dataclass
class RoutedImages:
    """Where a set of images was routed.

    Args:
        images (int): Images routed.
        mean_madds (float): Mean MAdds of their routed sub-networks.
        routing (dict): Images per sub-network name, in index order (only
            the sub-networks that got any).
    """
    images: int
    mean_madds: float
    routing: Dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, results: Sequence[tuple]) -> 'RoutedImages':
        """From ``(sub-network index, MAdds, level)`` tuples."""
        counts = {
            subnet_name(k): sum(1 for r in results if r[0] == k)
            for k in sorted({r[0] for r in results})
        }
        return cls(len(results), sum(r[1] for r in results) / len(results),
                   counts)

    def metrics(self, prefix: str = '') -> Dict[str, float]:
        """``{prefix}mean_madds`` and ``{prefix}subnet_{k}``."""
        out = {f'{prefix}mean_madds': self.mean_madds}
        out.update({prefix + name: n for name, n in self.routing.items()})
        return out


@dataclass
class RoutingResult:
    """What :class:`RoutingMetric` measured: all images, and per
    difficulty level where the samples carry one."""
    overall: RoutedImages
    levels: Dict[int, RoutedImages] = field(default_factory=dict)

    def metrics(self) -> Dict[str, float]:
        """The scalar metrics (without the ``routing/`` prefix)."""
        out = self.overall.metrics()
        for level, part in self.levels.items():
            prefix = f'level_{level}/'
            out[f'{prefix}images'] = part.images
            out.update(part.metrics(prefix))
        return out


@METRICS.register_module()
class RoutingMetric(BaseMetric):
    """Mean MAdds per image and routing histogram of a dynamic model.

    Reads ``routed_subnet`` and ``routed_madds`` that a dynamic classifier
    (``DSGateClassifier``) sets on each prediction. The mean MAdds is the mean
    over the evaluated images of the MAdds of each image's routed
    sub-network. Samples without routing (a static sub-network evaluated by
    the same evaluator) are skipped, so the metric then reports nothing.

    Where the samples carry a difficulty ``level`` (the graded digits, with
    ``'level'`` in ``PackInputs``' ``meta_keys``), the same numbers are also
    reported per level.

    Metrics: ``mean_madds`` and ``subnet_{k}`` (images routed to
    sub-network ``k``); per level ``level_{l}/images``,
    ``level_{l}/mean_madds`` and ``level_{l}/subnet_{k}``.

    After :meth:`evaluate`, :attr:`result` holds the same numbers as a
    :class:`RoutingResult` keyed by sub-network name (on every rank), or
    None when no sample was routed.
    """
    default_prefix = 'routing'

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.result: Optional[RoutingResult] = None

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if 'routed_subnet' in sample:
                self.results.append(
                    (int(sample['routed_subnet']),
                     float(sample['routed_madds']), level_of(sample)))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        if not results:
            self.result = None
            return {}
        by_level = defaultdict(list)
        for result in results:
            if result[2] is not None:
                by_level[result[2]].append(result)
        self.result = RoutingResult(
            RoutedImages.of(results),
            {level: RoutedImages.of(by_level[level])
             for level in sorted(by_level)})
        return self.result.metrics()

    def evaluate(self, size: int) -> dict:
        """The metrics of :class:`~mmengine.evaluator.BaseMetric`, with
        :attr:`result` sent from the main process to every rank."""
        metrics = super().evaluate(size)
        shared = [self.result if is_main_process() else None]
        broadcast_object_list(shared)
        self.result = shared[0]
        return metrics


@METRICS.register_module()
class LevelAccuracy(BaseMetric):
    """Top-1 accuracy (%) per difficulty level.

    Reads the ``level`` of each data sample (see :class:`RoutingMetric`) and
    compares ``pred_label`` with ``gt_label``; samples without a level are
    skipped. Use it beside mmpretrain's ``Accuracy``, which gives the top-1
    over all samples.

    Metrics: ``level_{l}/top1`` (with the default prefix:
    ``accuracy/level_0/top1``).
    """
    default_prefix = 'accuracy'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            level = level_of(sample)
            if level is not None:
                correct = int(sample['pred_label'].view(-1)[0]) == int(
                    sample['gt_label'].view(-1)[0])
                self.results.append((level, correct))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        metrics = {}
        for level in sorted({r[0] for r in results}):
            hits = [c for lv, c in results if lv == level]
            metrics[f'level_{level}/top1'] = 100.0 * sum(hits) / len(hits)
        return metrics

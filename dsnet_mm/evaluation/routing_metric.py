# Copyright (c) dsnet_mm contributors. All rights reserved.
from collections import defaultdict
from typing import Dict, List, Sequence

from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS


def level_of(sample: dict):
    """The difficulty level a data sample carries, or None (see
    :mod:`dsnet_mm.datasets.graded_digits`)."""
    level = sample.get('level')
    return None if level is None else int(level)


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
    """
    default_prefix = 'routing'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if 'routed_subnet' in sample:
                self.results.append(
                    (int(sample['routed_subnet']),
                     float(sample['routed_madds']), level_of(sample)))

    @staticmethod
    def _summary(results: List[tuple], prefix: str = '') -> Dict[str, float]:
        metrics = {f'{prefix}mean_madds':
                   sum(r[1] for r in results) / len(results)}
        for k in sorted({r[0] for r in results}):
            metrics[f'{prefix}subnet_{k}'] = sum(1 for r in results
                                                 if r[0] == k)
        return metrics

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        if not results:
            return {}
        metrics = self._summary(results)
        by_level = defaultdict(list)
        for result in results:
            if result[2] is not None:
                by_level[result[2]].append(result)
        for level in sorted(by_level):
            prefix = f'level_{level}/'
            metrics[f'{prefix}images'] = len(by_level[level])
            metrics.update(self._summary(by_level[level], prefix))
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

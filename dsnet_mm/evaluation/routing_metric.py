# Copyright (c) dsnet_mm contributors. All rights reserved.
from typing import Dict, List, Sequence

from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS


@METRICS.register_module()
class RoutingMetric(BaseMetric):
    """Mean MAdds per image and routing histogram of a dynamic model.

    Reads ``routed_subnet`` and ``routed_madds`` that a dynamic classifier
    (``DSGateClassifier``) sets on each prediction. The mean MAdds is the mean
    over the evaluated images of the MAdds of each image's routed
    sub-network. Samples without routing (a static sub-network evaluated by
    the same evaluator) are skipped, so the metric then reports nothing.

    Metrics: ``mean_madds`` and ``subnet_{k}`` (images routed to
    sub-network ``k``).
    """
    default_prefix = 'routing'

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if 'routed_subnet' in sample:
                self.results.append(
                    (int(sample['routed_subnet']),
                     float(sample['routed_madds'])))

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        if not results:
            return {}
        metrics = dict(mean_madds=sum(m for _, m in results) / len(results))
        for k in sorted({k for k, _ in results}):
            metrics[f'subnet_{k}'] = sum(1 for j, _ in results if j == k)
        return metrics

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Validation and test loops that evaluate every sub-network."""
import json
import os.path as osp
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import master_only
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import TestLoop, ValLoop
from mmpretrain.registry import LOOPS

from dsnet_mm.analysis import subnet_complexity, write_report
from dsnet_mm.analysis.report import DynamicResult, LevelResult, SubnetRow
from dsnet_mm.evaluation import RoutingMetric, RoutingResult
from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops import DSBatchNorm2d
from dsnet_mm.ops.utils import check_bool, check_int, check_keys, check_type
from .bn_calibration import build_calibration_dataloader, calibrate_bn

EMA_PREFIX = 'ema/'


def _cell(value: Optional[float], key: str) -> str:
    """A metric in the logged table: a percentage (``accuracy/...``) with 2
    decimals, anything else (a 0..1 mAP) with 4."""
    value = float('nan') if value is None else value
    return f'{value:>18.2f}' if key.startswith('accuracy') \
        else f'{value:>18.4f}'


@contextmanager
def _teacher_as_model(model) -> Iterator[None]:
    """Within the block, ``model``'s backbone, head (and neck) are those of
    its EMA teacher (``model.teacher.module``, which holds them under those
    names), so that the model's own predict, BN calibration and complexity
    count run the teacher; the teacher's BN statistics are put back after
    the block, which may recalibrate them."""
    parts = model.teacher.module
    own = {name: getattr(model, name) for name in parts.keys()}
    norms = [m for m in parts.modules() if isinstance(m, DSBatchNorm2d)]
    saved = [[t.clone() for t in (m.running_mean, m.running_var,
                                  m.num_batches_tracked)] for m in norms]
    try:
        for name, part in parts.items():
            setattr(model, name, part)
        yield
    finally:
        for name, part in own.items():
            setattr(model, name, part)
        with torch.no_grad():
            for m, stats in zip(norms, saved):
                for t, value in zip((m.running_mean, m.running_var,
                                     m.num_batches_tracked), stats):
                    t.copy_(value)


class SubnetEvalMixin:
    """Evaluate a list of sub-networks, each after BN recalibration, and the
    dynamic model if there is one.

    Every sub-network's metrics are reported under its name
    (``subnet_3/accuracy/top1``), with its MAdds (``subnet_3/madds``); a
    dynamic model's under ``dynamic/`` (its mean MAdds and routing histogram
    come from ``RoutingMetric`` in the evaluator). A table is logged, and
    ``subnet_results.json``, ``report.md`` and ``accuracy_vs_madds.png`` are
    written to the work dir.

    With ``ema``, the EMA teacher of a Stage I model
    (:class:`~dsnet_mm.models.classifiers.DSImageClassifier`, whose EMA the
    reference DS-Net code reports) is evaluated too, after the model, on
    the same sub-networks, each recalibrated as the model's are, under
    ``ema/`` (``ema/subnet_3/accuracy/top1``); the table and
    ``subnet_results.json`` list both. The teacher's BN statistics are put
    back afterwards, so that validating it does not change the targets
    that training goes on with.

    The model may be an mmpretrain classifier or an mmdet detector with a DS
    backbone (:class:`~dsnet_mm.models.detectors.DSSingleStageDetector`, or
    :class:`~dsnet_mm.models.detectors.DSGateDetector` for the dynamic
    one); ``metric`` names the evaluator's key that the report compares
    (``'pascal_voc/mAP'`` with mmdet's ``VOCMetric``). MAdds are per image
    at the input shape of the first evaluated batch (the report states it):
    backbone, neck and head, no post-processing or NMS
    (:func:`~dsnet_mm.models.subnet_table.network_forward`).
    """

    stage = ''  # 'val' or 'test': which hooks the loop calls

    def __init__(self,
                 runner,
                 dataloader,
                 evaluator,
                 subnets: Union[str, Sequence] = 'all',
                 calibrate: Optional[dict] = dict(num_batches=100),
                 dynamic: bool = True,
                 fp16: bool = False,
                 metric: str = 'accuracy/top1',
                 ema: bool = False) -> None:
        if subnets != 'all':
            check_type('subnets', subnets, (list, tuple),
                       "'all' or a list of sub-network indices / names")
            for k, key in enumerate(subnets):
                check_type(f'subnets[{k}]', key, (int, str),
                           'a sub-network index or name')
        if calibrate is not None:
            check_keys('calibrate', calibrate,
                       optional=('num_batches', 'dataloader'))
            check_int('calibrate.num_batches',
                      calibrate.get('num_batches', 100), 1)
        check_bool('dynamic', dynamic)
        check_bool('fp16', fp16)
        check_bool('ema', ema)
        check_type('metric', metric, str,
                   "an evaluator key, e.g. 'accuracy/top1' or "
                   "'pascal_voc/mAP'")
        super().__init__(runner, dataloader, evaluator, fp16)
        self.dynamic = dynamic
        self.ema = ema
        self.subnets = subnets
        self.calibrate = calibrate
        self.metric = metric
        self._calib_loader = None
        self._complexity = None
        self._input_shape = None

    def run(self) -> dict:
        self.runner.call_hook(f'before_{self.stage}')
        self.runner.call_hook(f'before_{self.stage}_epoch')
        metrics = self._eval_subnets()
        self.runner.call_hook(f'after_{self.stage}_epoch', metrics=metrics)
        self.runner.call_hook(f'after_{self.stage}')
        return metrics

    @property
    def model(self):
        model = self.runner.model
        return model.module if is_model_wrapper(model) else model

    def specs(self) -> List[SubnetSpec]:
        space = self.model.backbone.space
        if self.subnets == 'all':
            return [*space.subnets, space.largest]
        return [space.get(k) for k in self.subnets]

    def _calibration_batches(self):
        if self._calib_loader is None:
            cfg = self.calibrate.get('dataloader') or \
                self.runner.cfg.get('train_dataloader')
            if cfg is None:
                raise ValueError('BN calibration needs a dataloader: set '
                                 'calibrate.dataloader or train_dataloader')
            self._calib_loader = build_calibration_dataloader(
                cfg, seed=self.runner.seed)
        return self._calib_loader

    def _evaluate(self) -> Dict[str, float]:
        self.runner.model.eval()
        for idx, data_batch in enumerate(self.dataloader):
            self.run_iter(idx, data_batch)
            if self._complexity is None:
                self._count_complexity(data_batch)
        return self.evaluator.evaluate(len(self.dataloader.dataset))

    def _eval_subnets(self) -> Dict[str, float]:
        model = self.model
        if self.ema and getattr(model, 'teacher', None) is None:
            raise ValueError(
                f'ema=True in the {self.stage} loop needs a model with an EMA '
                f'teacher (DSImageClassifier, Stage I); '
                f'{type(model).__name__} has none: set ema=False')
        metrics, rows = self._eval_specs(model)
        dynamic = None
        if self.dynamic and hasattr(model, 'forward_dynamic'):
            result = self._evaluate()
            metrics.update({f'dynamic/{k}': v for k, v in result.items()})
            dynamic = self._dynamic_summary(model, self._routing(), result,
                                            self.metric)
        ema_rows = None
        if self.ema:
            with _teacher_as_model(model):
                ema_metrics, ema_rows = self._eval_specs(model)
            metrics.update(
                {EMA_PREFIX + k: v for k, v in ema_metrics.items()})
        self._report(rows, dynamic, ema_rows)
        return metrics

    def _eval_specs(self, model) -> Tuple[Dict[str, float], List[SubnetRow]]:
        """(metrics, report rows) of every sub-network of :meth:`specs`,
        each recalibrated first if ``calibrate`` is set."""
        # a DS model's switch also stops routing; a stock model's backbone
        switch = getattr(model, 'subnet', model.backbone.subnet)
        metrics: Dict[str, float] = {}
        rows = []
        specs = self.specs()
        for k, spec in enumerate(specs, 1):
            start = time.time()
            if self.calibrate is not None:
                calibrate_bn(model, self._calibration_batches(), spec,
                             self.calibrate.get('num_batches', 100))
            with switch(spec):
                result = self._evaluate()
            self._check_metric(result)
            # one line per sub-network: a long evaluation shows progress
            print_log(f'{self.stage} [{k}/{len(specs)}] {spec.name}: '
                      f'{self.metric} {result[self.metric]:.2f} '
                      f'({time.time() - start:.1f}s)', logger='current')
            cost = self._complexity[spec.name]
            metrics.update({f'{spec.name}/{k}': v for k, v in result.items()})
            metrics[f'{spec.name}/madds'] = cost['madds']
            rows.append(SubnetRow(spec.name, cost['madds'], cost['params'],
                                  result, spec.position,
                                  cost.get('backbone_madds')))
            if 'backbone_madds' in cost:  # a detector
                metrics[f'{spec.name}/backbone_madds'] = \
                    cost['backbone_madds']
        return metrics, rows

    def _check_metric(self, result: Dict[str, float]) -> None:
        if self.metric not in result:
            raise ValueError(
                f'metric={self.metric!r} of the {self.stage} loop is not '
                f'among the evaluator\'s results {sorted(result)}: set the '
                "loop's metric to one of them (e.g. 'pascal_voc/mAP' for "
                "VOCMetric, 'accuracy/top1' for Accuracy)")

    def _routing(self) -> Optional[RoutingResult]:
        """What the evaluator's :class:`RoutingMetric` measured in the last
        evaluation (None without one, or without routed samples)."""
        for metric in getattr(self.evaluator, 'metrics', ()):
            if isinstance(metric, RoutingMetric):
                return metric.result
        return None

    @staticmethod
    def _dynamic_summary(model, routing: Optional[RoutingResult],
                         result: Dict[str, float],
                         metric: str = 'accuracy/top1') -> DynamicResult:
        """The report's dynamic model (see :mod:`dsnet_mm.analysis.report`)
        from what :class:`RoutingMetric` measured (``routing``) and the
        evaluator's metrics (``result``: ``metric``, and the top-1 per
        level), with ``levels`` where the samples carry a difficulty
        level."""
        if routing is None:
            raise ValueError('evaluating a dynamic model needs RoutingMetric '
                             "in the evaluator: dict(type='RoutingMetric')")
        window = [s.name for s in model.window]

        def counts(part) -> Dict[str, int]:
            return {name: part.routing.get(name, 0) for name in window}

        levels = {
            level: LevelResult(part.images, part.mean_madds, counts(part),
                               result.get(f'accuracy/level_{level}/top1'))
            for level, part in routing.levels.items()
        }
        return DynamicResult(metric, result[metric],
                             routing.overall.mean_madds, counts(
                                 routing.overall), window, levels or None)

    def _count_complexity(self, data_batch: dict) -> None:
        model = self.model
        inputs = model.data_preprocessor(data_batch, False)['inputs']
        self._input_shape = tuple(inputs.shape[1:])
        rows = subnet_complexity(
            model, [*model.backbone.space.subnets,
                    model.backbone.space.largest], inputs.shape[1:])
        self._complexity = {r['name']: r for r in rows}

    @master_only
    def _report(self, rows: List[SubnetRow], dynamic: Optional[DynamicResult],
                ema_rows: Optional[List[SubnetRow]] = None) -> None:
        """Log the table and write the work dir's files, once (rank 0):
        every rank holds the same metrics, the evaluator having gathered
        them. The EMA teacher's rows (``ema_rows``) follow the model's in
        the table and ``subnet_results.json``; ``report.md`` is the
        model's."""
        keys = sorted({k for r in rows for k in r.metrics})
        size = 'x'.join(map(str, self._input_shape[1:]))
        named = [(r.name, r) for r in rows] + [
            (EMA_PREFIX + r.name, r) for r in ema_rows or []]
        w = max([12] + [len(name) for name, _ in named])
        head = f"{'sub-network':<{w}} {'MAdds (M)':>10} {'params (M)':>10} " \
            + ' '.join(f'{k:>18}' for k in keys)
        lines = [head, '-' * len(head)]
        for name, r in named:
            lines.append(f'{name:<{w}} {r.madds / 1e6:>10.2f} '
                         f'{r.params / 1e6:>10.3f} ' +
                         ' '.join(_cell(r.metrics.get(k), k)
                                  for k in keys))
        if dynamic is not None:
            routed = ', '.join(f'{k}: {v}'
                               for k, v in dynamic.routing.items())
            value = _cell(dynamic.value, self.metric)
            lines.append(f"{'dynamic':<{w}} {dynamic.madds / 1e6:>10.2f} "
                         f"{'':>10} {value}  ({self.metric}; routed {routed})")
        self.runner.logger.info(
            f'Per-sub-network results (MAdds per image at {size}):\n' +
            '\n'.join(lines))
        work_dir = self.runner.work_dir
        with open(osp.join(work_dir, 'subnet_results.json'), 'w') as f:
            results = dict(subnets=[r.to_dict() for r in rows],
                           dynamic=None if dynamic is None
                           else dynamic.to_dict(),
                           metric=self.metric,
                           input_shape=self._input_shape)
            if ema_rows is not None:
                results['ema'] = [r.to_dict() for r in ema_rows]
            json.dump(results, f, indent=2, default=float)
        if rows and all(self.metric in r.metrics for r in rows):
            paths = write_report(rows, work_dir, dynamic,
                                 title=f'DS-Net results (MAdds per image at '
                                 f'{size})',
                                 num_images=len(self.dataloader.dataset),
                                 metric=self.metric)
            self.runner.logger.info('Report: ' + ', '.join(paths.values()))


@LOOPS.register_module()
class SubnetValLoop(SubnetEvalMixin, ValLoop):
    """``ValLoop`` over every sub-network (or a subset) and the dynamic model.

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): Validation dataloader.
        evaluator (Evaluator | dict | list): Validation evaluator.
        subnets (str | list): ``'all'`` (every sub-network and the largest)
            or a list of indices / names (``'largest'``, ``'smallest'``).
            Defaults to ``'all'``.
        calibrate (dict, optional): BN recalibration before each sub-network:
            ``num_batches`` (default 100) and an optional ``dataloader`` config
            (default: the training dataloader). ``None`` skips it (Stage II,
            whose statistics are frozen). Defaults to
            ``dict(num_batches=100)``.
        dynamic (bool): Also evaluate the routed model, if the model has a
            gate. Defaults to True.
        fp16 (bool): Evaluate with autocast. Defaults to False.
        metric (str): The evaluator's key that the report compares across
            sub-networks: ``'accuracy/top1'`` (default) for a classifier,
            ``'pascal_voc/mAP'`` for a detector with ``VOCMetric``.
        ema (bool): Also evaluate the EMA teacher of a Stage I model on the
            same sub-networks, under ``ema/`` (the reference reports the
            EMA; the model is what Stage II and the tools load). Defaults
            to False.
    """
    stage = 'val'


@LOOPS.register_module()
class SubnetTestLoop(SubnetEvalMixin, TestLoop):
    """``TestLoop`` over every sub-network; arguments as :class:`SubnetValLoop`.
    """
    stage = 'test'

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Validation and test loops that evaluate every sub-network."""
import json
import os.path as osp
import re
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Union

from mmengine.dist import master_only
from mmengine.model import is_model_wrapper
from mmengine.runner import TestLoop, ValLoop
from mmpretrain.registry import LOOPS

from dsnet_mm.analysis import subnet_complexity, write_report
from dsnet_mm.models.subnet import SubnetSpec
from dsnet_mm.ops.utils import check_bool, check_int, check_keys, check_type
from .bn_calibration import build_calibration_dataloader, calibrate_bn


def _cell(value: Optional[float], key: str) -> str:
    """A metric in the logged table: a percentage (``accuracy/...``) with 2
    decimals, anything else (a 0..1 mAP) with 4."""
    value = float('nan') if value is None else value
    return f'{value:>18.2f}' if key.startswith('accuracy') \
        else f'{value:>18.4f}'


class SubnetEvalMixin:
    """Evaluate a list of sub-networks, each after BN recalibration, and the
    dynamic model if there is one.

    Every sub-network's metrics are reported under its name
    (``subnet_3/accuracy/top1``), with its MAdds (``subnet_3/madds``); a
    dynamic model's under ``dynamic/`` (its mean MAdds and routing histogram
    come from ``RoutingMetric`` in the evaluator). A table is logged, and
    ``subnet_results.json``, ``report.md`` and ``accuracy_vs_madds.png`` are
    written to the work dir.

    The model may be an mmpretrain classifier or an mmdet detector with a DS
    backbone (:class:`~dsnet_mm.models.detectors.DSSingleStageDetector`, or
    :class:`~dsnet_mm.models.detectors.DSGateDetector` for the dynamic
    one); ``metric`` names the evaluator's key that the report compares
    (``'pascal_voc/mAP'`` with mmdet's ``VOCMetric``). MAdds are per image
    at the input shape of the first evaluated batch (the report states it):
    backbone, neck and head, no post-processing or NMS
    (:func:`~dsnet_mm.analysis.subnet_table.network_forward`).
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
                 metric: str = 'accuracy/top1') -> None:
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
        check_type('metric', metric, str,
                   "an evaluator key, e.g. 'accuracy/top1' or "
                   "'pascal_voc/mAP'")
        super().__init__(runner, dataloader, evaluator, fp16)
        self.dynamic = dynamic
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
        static = getattr(model, 'static_predict', nullcontext)
        metrics: Dict[str, float] = {}
        rows = []
        for spec in self.specs():
            if self.calibrate is not None:
                calibrate_bn(model, self._calibration_batches(), spec,
                             self.calibrate.get('num_batches', 100))
            with model.backbone.subnet(spec), static():
                result = self._evaluate()
            self._check_metric(result)
            cost = self._complexity[spec.name]
            metrics.update({f'{spec.name}/{k}': v for k, v in result.items()})
            metrics[f'{spec.name}/madds'] = cost['madds']
            rows.append(dict(name=spec.name, index=spec.index,
                             madds=cost['madds'], params=cost['params'],
                             metrics=result))
            if 'backbone_madds' in cost:  # a detector
                metrics[f'{spec.name}/backbone_madds'] = \
                    cost['backbone_madds']
                rows[-1]['backbone_madds'] = cost['backbone_madds']
        dynamic = None
        if self.dynamic and hasattr(model, 'forward_dynamic'):
            result = self._evaluate()
            metrics.update({f'dynamic/{k}': v for k, v in result.items()})
            dynamic = self._dynamic_summary(model, result, self.metric)
        self._report(rows, dynamic)
        return metrics

    def _check_metric(self, result: Dict[str, float]) -> None:
        if self.metric not in result:
            raise ValueError(
                f'metric={self.metric!r} of the {self.stage} loop is not '
                f'among the evaluator\'s results {sorted(result)}: set the '
                "loop's metric to one of them (e.g. 'pascal_voc/mAP' for "
                "VOCMetric, 'accuracy/top1' for Accuracy)")

    @staticmethod
    def _dynamic_summary(model, result: Dict[str, float],
                         metric: str = 'accuracy/top1') -> dict:
        """The report's ``dynamic`` dict (see :mod:`dsnet_mm.analysis.report`)
        from the evaluator's metrics, with ``levels`` where the samples carry
        a difficulty level."""
        if 'routing/mean_madds' not in result:
            raise ValueError('evaluating a dynamic model needs RoutingMetric '
                             "in the evaluator: dict(type='RoutingMetric')")
        window = [s.name for s in model.window]
        summary = {
            metric: result[metric],
            'madds': result['routing/mean_madds'],
            'routing': {name: int(result.get(f'routing/{name}', 0))
                        for name in window},
            'window': window,
        }
        levels = sorted(int(m.group(1)) for m in map(
            re.compile(r'routing/level_(\d+)/images').fullmatch, result) if m)
        if levels:
            summary['levels'] = {
                level: {
                    'images': int(result[f'routing/level_{level}/images']),
                    'madds': result[f'routing/level_{level}/mean_madds'],
                    'accuracy/top1':
                    result.get(f'accuracy/level_{level}/top1'),
                    'routing': {
                        name: int(result.get(
                            f'routing/level_{level}/{name}', 0))
                        for name in window
                    },
                }
                for level in levels
            }
        return summary

    def _count_complexity(self, data_batch: dict) -> None:
        model = self.model
        inputs = model.data_preprocessor(data_batch, False)['inputs']
        self._input_shape = tuple(inputs.shape[1:])
        rows = subnet_complexity(
            model, [*model.backbone.space.subnets,
                    model.backbone.space.largest], inputs.shape[1:])
        self._complexity = {r['name']: r for r in rows}

    @master_only
    def _report(self, rows: List[dict], dynamic: Optional[dict]) -> None:
        """Log the table and write the work dir's files, once (rank 0):
        every rank holds the same metrics, the evaluator having gathered
        them."""
        keys = sorted({k for r in rows for k in r['metrics']})
        size = 'x'.join(map(str, self._input_shape[1:]))
        head = f"{'sub-network':<12} {'MAdds (M)':>10} {'params (M)':>10} " + \
            ' '.join(f'{k:>18}' for k in keys)
        lines = [head, '-' * len(head)]
        for r in rows:
            lines.append(f"{r['name']:<12} {r['madds'] / 1e6:>10.2f} "
                         f"{r['params'] / 1e6:>10.3f} " +
                         ' '.join(_cell(r['metrics'].get(k), k)
                                  for k in keys))
        if dynamic is not None:
            routed = ', '.join(f'{k}: {v}'
                               for k, v in dynamic['routing'].items())
            value = _cell(dynamic[self.metric], self.metric)
            lines.append(f"{'dynamic':<12} {dynamic['madds'] / 1e6:>10.2f} "
                         f"{'':>10} {value}  ({self.metric}; routed {routed})")
        self.runner.logger.info(
            f'Per-sub-network results (MAdds per image at {size}):\n' +
            '\n'.join(lines))
        work_dir = self.runner.work_dir
        with open(osp.join(work_dir, 'subnet_results.json'), 'w') as f:
            json.dump(dict(subnets=rows, dynamic=dynamic, metric=self.metric,
                           input_shape=self._input_shape), f, indent=2,
                      default=float)
        if rows and all(self.metric in r['metrics'] for r in rows):
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
    """
    stage = 'val'


@LOOPS.register_module()
class SubnetTestLoop(SubnetEvalMixin, TestLoop):
    """``TestLoop`` over every sub-network; arguments as :class:`SubnetValLoop`.
    """
    stage = 'test'

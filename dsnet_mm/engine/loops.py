# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Validation and test loops that evaluate every sub-network."""
import json
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

from mmengine.model import is_model_wrapper
from mmengine.runner import TestLoop, ValLoop
from mmpretrain.registry import LOOPS

from dsnet_mm.analysis import subnet_complexity
from dsnet_mm.models.subnet import SubnetSpec
from .bn_calibration import calibrate_bn


class SubnetEvalMixin:
    """Evaluate a list of sub-networks, each after BN recalibration.

    Every sub-network's metrics are reported under its name
    (``subnet_3/accuracy/top1``), with its MAdds (``subnet_3/madds``), and a
    table is logged and written to ``subnet_results.json`` in the log dir.
    """

    def _setup_subnets(self, subnets: Union[str, Sequence],
                       calibrate: Optional[dict]) -> None:
        if isinstance(subnets, str) and subnets != 'all':
            raise ValueError(f"subnets must be 'all' or a list of indices / "
                             f"names, got {subnets!r}")
        self.subnets = subnets
        if calibrate is not None:
            unknown = set(calibrate) - {'num_batches', 'dataloader'}
            if unknown:
                raise ValueError(f'calibrate accepts num_batches and '
                                 f'dataloader, got {sorted(unknown)}')
        self.calibrate = calibrate
        self._calib_loader = None
        self._complexity = None

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
            self._calib_loader = self.runner.build_dataloader(
                cfg, seed=self.runner.seed)
        return self._calib_loader

    def _eval_subnets(self, run_iter) -> Dict[str, float]:
        model = self.model
        specs = self.specs()
        metrics: Dict[str, float] = {}
        rows = []
        for spec in specs:
            if self.calibrate is not None:
                calibrate_bn(model, self._calibration_batches(), spec,
                             self.calibrate.get('num_batches', 100))
            self.runner.model.eval()
            with model.backbone.subnet(spec):
                for idx, data_batch in enumerate(self.dataloader):
                    run_iter(idx, data_batch)
                    if self._complexity is None:
                        self._count_complexity(data_batch)
                result = self.evaluator.evaluate(len(self.dataloader.dataset))
            cost = self._complexity[spec.name]
            metrics.update({f'{spec.name}/{k}': v for k, v in result.items()})
            metrics[f'{spec.name}/madds'] = cost['madds']
            rows.append(dict(name=spec.name, index=spec.index,
                             madds=cost['madds'], params=cost['params'],
                             metrics=result))
        self._report(rows)
        return metrics

    def _count_complexity(self, data_batch: dict) -> None:
        model = self.model
        inputs = model.data_preprocessor(data_batch, False)['inputs']
        rows = subnet_complexity(
            model, [*model.backbone.space.subnets,
                    model.backbone.space.largest], inputs.shape[1:])
        self._complexity = {r['name']: r for r in rows}

    def _report(self, rows: List[dict]) -> None:
        keys = sorted({k for r in rows for k in r['metrics']})
        head = f"{'sub-network':<12} {'MAdds (M)':>10} {'params (M)':>10} " + \
            ' '.join(f'{k:>18}' for k in keys)
        lines = [head, '-' * len(head)]
        for r in rows:
            lines.append(f"{r['name']:<12} {r['madds'] / 1e6:>10.2f} "
                         f"{r['params'] / 1e6:>10.3f} " +
                         ' '.join(f"{r['metrics'].get(k, float('nan')):>18.2f}"
                                  for k in keys))
        self.runner.logger.info('Per-sub-network results:\n' +
                                '\n'.join(lines))
        path = osp.join(self.runner.log_dir, 'subnet_results.json')
        with open(path, 'w') as f:
            json.dump(rows, f, indent=2, default=float)


@LOOPS.register_module()
class SubnetValLoop(SubnetEvalMixin, ValLoop):
    """``ValLoop`` over every sub-network (or a subset).

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): Validation dataloader.
        evaluator (Evaluator | dict | list): Validation evaluator.
        subnets (str | list): ``'all'`` (every sub-network and the largest)
            or a list of indices / names (``'largest'``, ``'smallest'``).
            Defaults to ``'all'``.
        calibrate (dict, optional): BN recalibration before each sub-network:
            ``num_batches`` (default 100) and an optional ``dataloader`` config
            (default: the training dataloader). ``None`` skips it.
            Defaults to ``dict(num_batches=100)``.
        fp16 (bool): Evaluate with autocast. Defaults to False.
    """

    def __init__(self,
                 runner,
                 dataloader,
                 evaluator,
                 subnets: Union[str, Sequence] = 'all',
                 calibrate: Optional[dict] = dict(num_batches=100),
                 fp16: bool = False) -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        self._setup_subnets(subnets, calibrate)

    def run(self) -> dict:
        self.runner.call_hook('before_val')
        self.runner.call_hook('before_val_epoch')
        metrics = self._eval_subnets(self.run_iter)
        self.runner.call_hook('after_val_epoch', metrics=metrics)
        self.runner.call_hook('after_val')
        return metrics


@LOOPS.register_module()
class SubnetTestLoop(SubnetEvalMixin, TestLoop):
    """``TestLoop`` over every sub-network; arguments as :class:`SubnetValLoop`.
    """

    def __init__(self,
                 runner,
                 dataloader,
                 evaluator,
                 subnets: Union[str, Sequence] = 'all',
                 calibrate: Optional[dict] = dict(num_batches=100),
                 fp16: bool = False) -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        self._setup_subnets(subnets, calibrate)

    def run(self) -> dict:
        self.runner.call_hook('before_test')
        self.runner.call_hook('before_test_epoch')
        metrics = self._eval_subnets(self.run_iter)
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        self.runner.call_hook('after_test')
        return metrics

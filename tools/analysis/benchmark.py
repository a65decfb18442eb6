# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Latency of slicing against a static network, masking and indexing.

    python tools/analysis/benchmark.py CONFIG [--checkpoint F]
        [--batch-sizes 1 32] [--modes slice static mask index dynamic]
        [--subnets all|0,5,13] [--device cpu|cuda] [--json OUT]
        [--plot PNG] [--shape H W] [--warmup N] [--repeats N]
        [--min-sample-ms MS] [--channels-last] [--allocator reuse|system]
        [--backends torch ort] [--compile] [--routing-mix 0.5,0,0,0.5]

A detector config (mmdet, a DS backbone) times modes slice and static in
eager torch, images to the dense head's raw outputs (no NMS).
Mode ``dynamic`` needs a gate config (``DSGateClassifier``): it routes real
images of the config's test set through the bucketed path, or with
``--routing-mix`` random images in fixed shares over the routing window (no
trained gate or data needed), and sets them against a static network of
equal MAdds and against the per-image static limit. ``--backends torch ort``
times onnxruntime beside eager PyTorch (static and dynamic modes),
``--compile`` adds ``torch.compile`` (slice, static and dynamic modes).
Writes a JSON file ``{"device", "results": [{mode, subnet, batch_size,
madds, median_ms, p90_ms, backend, ...}], "summary"}`` and a plot of latency
against MAdds per mode and backend.
"""
import argparse
import json
import os.path as osp
import platform
import sys

import torch
from mmengine.dataset import pseudo_collate
from mmengine.runner import load_checkpoint
from mmengine.utils import mkdir_or_exist

from dsnet_mm.analysis.benchmark import (BACKENDS, DETECTOR_MODES, DEVICES,
                                         MODES, BenchmarkOptions,
                                         benchmark, check_device,
                                         plot_latency, summarize)
from dsnet_mm.deploy.allocator import reuse_freed_memory
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.engine.cli import (add_cfg_options, add_shape, checked,
                                 input_size, load_config, subnet_key)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Latency of every sub-network in several modes')
    parser.add_argument('config', help='model config')
    parser.add_argument('--checkpoint', help='trained checkpoint (default: '
                        'random weights, which time the same)')
    parser.add_argument('--batch-sizes', type=checked(int, low=1), nargs='+',
                        default=[1, 32], help='batch sizes (default: 1 32)')
    parser.add_argument('--modes', nargs='+', choices=MODES,
                        help='modes to time (default: all but dynamic; '
                        'for a detector config slice and static)')
    parser.add_argument('--subnets', default='all',
                        help="'all', or comma-separated sub-network "
                        "indices or names, e.g. 0,5,13 or largest")
    parser.add_argument('--device', choices=DEVICES, default='cpu')
    parser.add_argument('--json', help='write the results to this file')
    parser.add_argument('--plot', help='latency plot PNG (default: next to '
                        '--json, same name with .png)')
    parser.add_argument('--warmup', type=checked(int, low=0), default=3,
                        help='untimed rounds (default: 3)')
    parser.add_argument('--repeats', type=checked(int, low=1), default=10,
                        help='timed rounds (default: 10)')
    parser.add_argument('--min-sample-ms', type=checked(float, low=0),
                        default=50.0,
                        help='a sample averages back-to-back calls over '
                        'about this long (default: 50; 0: one call)')
    parser.add_argument('--channels-last', action='store_true',
                        help='run in channels-last memory format')
    parser.add_argument('--allocator', choices=('reuse', 'system'),
                        default='reuse',
                        help="'reuse' (default): glibc malloc keeps freed "
                        'memory, so large activations are not page-faulted '
                        "in anew on every forward; 'system': malloc as the "
                        'process found it')
    parser.add_argument('--backends', nargs='+', choices=BACKENDS,
                        default=['torch'],
                        help='backends timed side by side (default: '
                        "torch); 'ort' runs the static networks and the "
                        'dynamic model as ONNX exports on onnxruntime')
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile (inductor) in modes '
                        'slice, static and dynamic; compiling takes '
                        'minutes on a few cores')
    parser.add_argument('--routing-mix', type=_mix,
                        help='mode dynamic without a trained gate: the '
                        'share of every batch routed to each window member, '
                        'e.g. 0.5,0,0,0.5 (one per member, summing to 1; '
                        'random images)')
    add_shape(parser)
    add_cfg_options(parser)
    return parser.parse_args()


def _mix(text: str):
    """``--routing-mix``: comma-separated fractions."""
    try:
        return [float(f) for f in text.split(',')]
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f'give comma-separated fractions, e.g. 0.5,0,0,0.5: {e}') from e


def _specs(space, text: str):
    if text == 'all':
        return list(space.subnets)
    keys = [subnet_key(k) for k in text.split(',') if k]
    if not keys:
        raise ValueError(f"subnets={text!r}: give 'all' or indices/names")
    return [space.get(k) for k in keys]


def _images(cfg, model, count: int) -> torch.Tensor:
    """``count`` preprocessed images of the config's test set."""
    from mmpretrain.registry import DATASETS
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    samples = [dataset[i] for i in range(min(count, len(dataset)))]
    return model.data_preprocessor(pseudo_collate(samples), False)['inputs']


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    try:
        device = check_device(args.device)
        model = build_model_from_cfg(cfg)
        specs = _specs(model.backbone.space, args.subnets)
    except ValueError as e:
        sys.exit(f'benchmark.py: error: {e}')
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu',
                        strict=True, logger='silent')
    model = model.to(device).eval()
    if args.modes is None:
        args.modes = list(DETECTOR_MODES) if hasattr(model, 'bbox_head') \
            else ['slice', 'static', 'mask', 'index']
    allocator = 'system'
    if args.allocator == 'reuse':
        allocator = reuse_freed_memory() or 'system (not glibc)'
    shape = (model.backbone.in_channels, *input_size(cfg, args.shape))
    images = None
    if 'dynamic' in args.modes and args.routing_mix is None:
        images = _images(cfg, model, max(args.batch_sizes))
        shape = tuple(images.shape[1:])
    try:
        options = BenchmarkOptions(
            modes=args.modes, batch_sizes=args.batch_sizes,
            warmup=args.warmup, repeats=args.repeats,
            min_sample_ms=args.min_sample_ms,
            channels_last=args.channels_last, backends=args.backends,
            compile=args.compile, routing_mix=args.routing_mix)
        rows = benchmark(model, specs, shape, device, options, images,
                         progress=lambda line: print(line, file=sys.stderr,
                                                     flush=True))
    except ValueError as e:
        sys.exit(f'benchmark.py: error: {e}')
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' \
        else f'cpu ({platform.processor() or platform.machine()}, ' \
        f'{torch.get_num_threads()} threads)'
    result = dict(device=name, channels_last=args.channels_last,
                  allocator=allocator, backends=args.backends,
                  compile=args.compile, results=rows,
                  summary=summarize(rows))
    print(f"{'mode':<8} {'subnet':<12} {'batch':>5} {'backend':<8} "
          f"{'MAdds (M)':>10} {'median ms':>10} {'p90 ms':>9}")
    for r in rows:
        print(f"{r['mode']:<8} {r['subnet']:<12} {r['batch_size']:>5} "
              f"{r['backend']:<8} {r['madds'] / 1e6:>10.2f} "
              f"{r['median_ms']:>10.2f} {r['p90_ms']:>9.2f}")
    print(json.dumps(result['summary'], indent=1))
    if args.json:
        mkdir_or_exist(osp.dirname(osp.abspath(args.json)))
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1)
    plot = args.plot or (osp.splitext(args.json)[0] + '.png'
                         if args.json else None)
    if plot:
        mkdir_or_exist(osp.dirname(osp.abspath(plot)))
        plot_latency(rows, plot)
        print(f'wrote {args.json or ""} {plot}', file=sys.stderr)


if __name__ == '__main__':
    main()

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""MAdds and parameters of every sub-network of a DS model config.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--json]
"""
import argparse
import json


from dsnet_mm.analysis import subnet_complexity
from dsnet_mm.engine import build_model_from_cfg
from dsnet_mm.engine.cli import (add_cfg_options, add_shape, input_size,
                                 load_config)


def parse_args():
    parser = argparse.ArgumentParser(
        description='MAdds and parameters of every sub-network')
    parser.add_argument('config', help='model config file')
    add_shape(parser)
    parser.add_argument(
        '--json',
        action='store_true',
        help='print one JSON object instead of the table')
    add_cfg_options(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = load_config(args.config, args.cfg_options)
    model = build_model_from_cfg(cfg)
    space = getattr(model.backbone, 'space', None)
    if space is None:
        raise SystemExit(f'{cfg.model.backbone.type} is not a DS backbone: '
                         'it has no sub-networks to list')
    shape = (model.backbone.in_channels, *input_size(cfg, args.shape))
    rows = subnet_complexity(model, [*space.subnets, space.largest], shape)
    *subnets, largest = rows
    if args.json:
        print(json.dumps(
            dict(
                shape=list(shape),
                subnets=[
                    dict(index=r['index'], madds=r['madds'],
                         params=r['params'], widths=r['widths'])
                    for r in subnets
                ],
                largest=dict(madds=largest['madds'],
                             params=largest['params'],
                             widths=largest['widths']))))
        return
    groups = list(space.groups)
    print(f'Input shape: {shape}')
    print(f"{'index':>8} {'MAdds (M)':>10} {'Params (M)':>10}  "
          f"channels ({'/'.join(groups)})")
    for r in rows:
        index = 'largest' if r['name'] == 'largest' else str(r['index'])
        widths = '/'.join(str(r['widths'][g]) for g in groups)
        print(f"{index:>8} {r['madds'] / 1e6:>10.2f} "
              f"{r['params'] / 1e6:>10.3f}  {widths}")


if __name__ == '__main__':
    main()

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Command-line pieces shared by the tools."""
import argparse
import gc
import os
import pickle
import subprocess
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction

from dsnet_mm.mim import SCOPE
from dsnet_mm.ops.utils import check_float, check_int


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, xxx=yyy format')


def checked(kind: type, **bounds) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind`` (int or float) within ``bounds``
    (the keyword arguments of :func:`~dsnet_mm.ops.utils.check_int` /
    :func:`~dsnet_mm.ops.utils.check_float`), so that argparse's error
    names the option."""
    check = check_int if kind is int else check_float

    def parse(text: str):
        value = kind(text)  # a ValueError: argparse's "invalid int value"
        try:
            check('the value', value, **bounds)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from e
        return value

    parse.__name__ = kind.__name__
    return parse


def add_shape(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--shape',
        type=checked(int, low=1),
        nargs=2,
        default=None,
        metavar=('H', 'W'),
        help="input image size (default: the config's test image size, see "
        'input_size; 224 224 where the config does not fix one)')


def _pipeline_size(pipeline) -> Optional[Tuple[int, int]]:
    """(H, W) the last resizing transform of ``pipeline`` fixes: a crop's
    ``crop_size`` or a ``Resize`` to an exact ``scale`` (mmcv's (W, H)),
    else None."""
    size = None
    for t in pipeline or ():
        kind = str(t.get('type', ''))
        if 'crop_size' in t and 'Crop' in kind:
            c = t['crop_size']
            size = (c, c) if isinstance(c, int) else (c[1], c[0])
        elif kind.split('.')[-1] == 'Resize' and 'scale' in t and \
                not t.get('keep_ratio', False):
            sc = t['scale']
            size = (sc, sc) if isinstance(sc, int) else (sc[1], sc[0])
    return size


def input_size(cfg: Config,
               shape: Optional[Sequence[int]] = None) -> Tuple[int, int]:
    """The (H, W) a tool runs the model at: ``shape`` where given (the
    ``--shape`` option), else the size of the config's test images: the
    last crop or exact resize of the test pipeline, or 32 x 32 for a
    dataset in the CIFAR layout (whose images are stored at that size),
    else 224 x 224 (ImageNet's)."""
    if shape is not None:
        return tuple(shape)
    dataset = cfg.get('test_dataloader', {}).get('dataset', {}) or {}
    size = _pipeline_size(dataset.get('pipeline'))
    if size is not None:
        return size
    if 'CIFAR' in str(dataset.get('type', '')).upper():
        return (32, 32)
    return (224, 224)


def subnet_key(text: str):
    """A sub-network on the command line: an index, or a name such as
    ``'largest'``, for :meth:`SubnetSpace.get`."""
    return int(text) if text.lstrip('-').isdigit() else text


def add_launcher(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch>=2) or --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def export_local_rank(args: argparse.Namespace) -> None:
    """Set ``LOCAL_RANK`` from the arguments unless a launcher already did."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config (a file, or ``dsnet_mm::NAME`` for one shipped with the
    package) and apply ``--cfg-options`` overrides."""
    cfg = Config.fromfile(path)
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _export_slurm_env() -> None:
    """torch.distributed's ``env://`` variables from Slurm's, as mmengine's
    slurm initialisation sets them (which then also selects a GPU)."""
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')
               if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher slurm needs {", ".join(missing)} in '
                           'the environment: start the tool with srun '
                           '(tools/slurm_train.sh)')
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        hosts = subprocess.run(
            ['scontrol', 'show', 'hostnames', os.environ['SLURM_NODELIST']],
            capture_output=True, text=True, check=True).stdout
        os.environ['MASTER_ADDR'] = hosts.split()[0]


@contextmanager
def distributed(launcher: str, cpu: bool = False) -> Iterator[None]:
    """The block of a tool's run; with a launcher, its process group ends
    with the block.

    mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device``
    unconditionally, so without CUDA (or for a tool that keeps its tensors on
    the CPU, ``cpu=True``) a gloo group is started here, for the ``pytorch``
    launcher (torchrun's variables) and the ``slurm`` one (srun's, translated
    by :func:`_export_slurm_env`); with a process group already started, the
    Runner skips it, and the same command trains on CPU machines. mmengine
    never destroys the group: a process that exits with it alive can abort
    at exit ("terminate called without an active exception", gloo's threads
    outliving the interpreter), so the block destroys whichever group is up
    when it ends. A block that ends normally first waits at a barrier for
    every rank: a rank that tore its group down while another still read
    from it (the last collective's data, a checkpoint's broadcast) would
    abort that rank the same way.

    What the block made that holds the group (mmengine's Runner and its
    ``DistributedDataParallel`` wrapper, whose reducer keeps the group and
    its work) must be gone before the group is: a gloo group freed during
    interpreter finalization aborts the process the same way. The Runner
    sits in reference cycles, so dropping the last name is not enough: keep
    it in a function called inside the block (the tools' ``train`` /
    ``evaluate``), and the block collects the cycles before it tears the group
    down.
    """
    import torch
    import torch.distributed as dist
    if launcher in ('pytorch', 'slurm') and not dist.is_initialized() and \
            (cpu or not torch.cuda.is_available()):
        if launcher == 'slurm':
            _export_slurm_env()
        dist.init_process_group('gloo')
    try:
        yield
    except BaseException:
        if dist.is_available() and dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()
        raise
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def add_trust_checkpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='load checkpoints with full unpickling (weights_only=False). '
        'A checkpoint is a pickle that can run code: use this only for a '
        'file you trust that the weights-only loader refuses')


@contextmanager
def checkpoint_trust(trust: bool) -> Iterator[None]:
    """Weights-only loading unless ``trust``; a refused or unreadable
    checkpoint stops the run with advice instead of a traceback.

    Checkpoints load with ``torch.load(weights_only=True)`` and the
    allow-list of :mod:`dsnet_mm.engine.checkpoint`; a file that needs any
    other global stops the run with a message that names the flag.
    """
    if trust:
        os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'
    try:
        yield
    except pickle.UnpicklingError as e:
        raise SystemExit(
            'A checkpoint was refused by weights-only loading, which allows '
            'tensors and the few classes mmengine/dsnet_mm checkpoints hold:'
            f'\n{e}\nIf you trust this file, run again with '
            '--trust-checkpoint.') from e
    except RuntimeError as e:
        if 'PytorchStreamReader' not in str(e):
            raise
        raise SystemExit(
            f'A checkpoint is truncated or corrupt and cannot be read ({e}). '
            'Checkpoints written by dsnet_mm are atomic: take the previous '
            'epoch_*.pth of the work dir.') from e


# --- checkpoint converters (tools/convert) ----------------------------------
def converter_parser(description: str, source: str,
                     default_config: str) -> argparse.ArgumentParser:
    """The arguments of every converter: ``src``, ``dst``, ``--config``
    (default: ``default_config`` among the configs shipped with the package,
    ``dsnet_mm::default_config``), ``--cfg-options`` and
    ``--trust-checkpoint``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help=source)
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument(
        '--config',
        default=f'{SCOPE}::{default_config}',
        help='target model config: a file, or a config shipped with the '
        'package as dsnet_mm::NAME (default: %(default)s)')
    add_cfg_options(parser)
    add_trust_checkpoint(parser)
    return parser


def load_for_conversion(args: argparse.Namespace) -> Tuple[Any, Any]:
    """(target model of ``--config``, source checkpoint): the source loads
    weights-only unless ``--trust-checkpoint``."""
    import torch

    from dsnet_mm.engine import build_model_from_cfg
    model = build_model_from_cfg(load_config(args.config, args.cfg_options))
    with checkpoint_trust(args.trust_checkpoint):
        ckpt = torch.load(args.src, map_location='cpu',
                          weights_only=not args.trust_checkpoint)
    return model, ckpt


def save_converted(converted: dict, args: argparse.Namespace,
                   **meta) -> None:
    """Write ``converted`` to ``dst`` (atomically, by dsnet_mm's local file
    backend) with the source and ``meta`` in its meta, and say so."""
    from mmengine.runner import save_checkpoint
    save_checkpoint(
        dict(state_dict=converted, meta=dict(converted_from=args.src,
                                             **meta)), args.dst)
    print(f'converted {len(converted)} tensors from {args.src} to '
          f'{args.dst}')

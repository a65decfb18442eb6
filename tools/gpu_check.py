# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The CUDA check of the main job and the tools; run it as
``bash tools/gpu_check.sh [--dry-run] [--work-dir DIR] [--data-root DIR]``
(the shell script documents the steps, the time and the JSON summary).

Every step is a subprocess of a repository tool whose output goes to
``WORK/logs/<step>.log``; after it exits, the step's own files are checked
(checkpoints, metrics, benchmark and export results) and the numbers that
matter are written into ``WORK/gpu_check.json``. A step whose inputs a failed
step should have made is recorded as failed without running. The exit status
is 0 only when every step passed.
"""
import argparse
import glob
import json
import math
import os
import os.path as osp
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
STAGE1 = 'configs/ds_mbnet_graded_digits.py'
STAGE2 = 'configs/ds_mbnet_graded_digits_gate.py'
# the Stage II configs of the benchmarked architectures (mode dynamic needs
# a gate; modes slice and static time the same backbone)
BENCHMARKS = {
    'ds_mbnet': 'configs/ds_mbnet_imagenet_gate.py',
    'ds_resnet50': 'configs/ds_resnet50_imagenet_gate.py',
}
# both gates route over 4 sub-networks: a quarter of each batch to each
ROUTING_MIX = '0.25,0.25,0.25,0.25'

# what each mode runs: Stage I iterations (one epoch), Stage II iterations
# per epoch (two epochs), batch size, BN calibration batches, test images
# and routing-budget images (None: the config's whole split), benchmark
# shape, batch sizes and timing, the timeout of a step and the default time
# limit of all (seconds)
SETTINGS = {
    'cuda':
    dict(stage1_iters=8, stage2_iters=4, batch_size=64, calib_batches=10,
         test_images=None, budget_images=None, bench_shape=224,
         bench_batch_sizes=[1, 32], bench_timing=[], export_shape=32,
         timeout=300, limit=360),
    'dry-run':
    dict(stage1_iters=3, stage2_iters=2, batch_size=8, calib_batches=1,
         test_images=32, budget_images=32, bench_shape=32,
         bench_batch_sizes=[2],
         bench_timing=['--warmup', '0', '--repeats', '1',
                       '--min-sample-ms', '0'],
         export_shape=32, timeout=300, limit=900),
}


class CheckFailed(Exception):
    """A step's tool exited 0 but what it wrote is wrong; ``numbers`` go
    into the step's record all the same."""

    def __init__(self, message: str, numbers: Optional[Dict] = None):
        super().__init__(message)
        self.numbers = numbers or {}


def parse_args():
    parser = argparse.ArgumentParser(
        description='Run the main job and the tools on CUDA, briefly, and '
        'write one JSON summary')
    parser.add_argument(
        '--dry-run',
        action='store_true',
        help='every step on the CPU with tiny settings (wiring check)')
    parser.add_argument(
        '--work-dir',
        default=osp.join(ROOT, 'work_dirs', 'gpu_check'),
        help='where the steps write (default: work_dirs/gpu_check); the '
        'folder of an earlier check is emptied first')
    parser.add_argument(
        '--data-root',
        default=osp.join(ROOT, 'data'),
        help='root of the embedded data; the graded digits are read from '
        'DATA_ROOT/graded_digits and written there if missing (default: '
        'data)')
    parser.add_argument(
        '--time-limit',
        type=float,
        help='seconds for all the steps; a step that would start later '
        'fails without running, a running one is stopped at the limit '
        '(default: 360 on CUDA, 900 for the dry run)')
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _tail(path: str, lines: int = 30) -> str:
    with open(path, errors='replace') as f:
        return ''.join(f.readlines()[-lines:])


def _children_cpu() -> float:
    """CPU seconds (user and system) of the finished subprocesses."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Runner:
    """Runs the steps and collects their records."""

    def __init__(self, work_dir: str, timeout: int, deadline: float) -> None:
        self.work_dir = work_dir
        self.timeout = timeout
        self.deadline = deadline
        self.logs = osp.join(work_dir, 'logs')
        os.makedirs(self.logs, exist_ok=True)
        self.steps: List[Dict] = []
        self.env = dict(os.environ)
        # tools/dist_train.sh calls torchrun from PATH: this interpreter's
        # folder first
        bin_dir = osp.dirname(sys.executable)
        self.env['PATH'] = bin_dir + os.pathsep + self.env.get('PATH', '')
        self.env['PYTHONPATH'] = ROOT + (
            os.pathsep + self.env['PYTHONPATH']
            if self.env.get('PYTHONPATH') else '')

    def passed(self, name: str) -> bool:
        return any(s['name'] == name and s['ok'] for s in self.steps)

    def run(self,
            name: str,
            cmd: Sequence[str],
            verify: Optional[Callable[[], Dict]] = None,
            needs: Sequence[str] = (),
            env: Optional[Dict[str, str]] = None) -> bool:
        """Run ``cmd`` in the repository root; the step passes if it exits
        0 and ``verify`` (which returns the step's numbers) raises
        nothing."""
        record = dict(name=name, command=shlex.join(cmd), ok=False)
        self.steps.append(record)
        missing = [n for n in needs if not self.passed(n)]
        if missing:
            record['error'] = f'not run: needs the output of {missing}'
            print(f'== {name}: {record["error"]}', flush=True)
            return False
        timeout = min(self.timeout, self.deadline - time.time())
        if timeout < 10:
            record['error'] = 'not run: the time limit (--time-limit) is spent'
            print(f'== {name}: {record["error"]}', flush=True)
            return False
        log = osp.join(self.logs, f'{name}.log')
        record['log'] = log
        print(f'== {name}: {record["command"]}', flush=True)
        start = time.time()
        cpu_start = _children_cpu()
        with open(log, 'w') as f:
            # its own process group: a timeout stops torchrun's workers too
            proc = subprocess.Popen(
                list(cmd), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                env=dict(self.env, **(env or {})), start_new_session=True)
            try:
                record['returncode'] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                record['error'] = f'timed out after {timeout:.0f}s'
            except BaseException:  # interrupted: leave no step running
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        record['seconds'] = round(time.time() - start, 1)
        record['cpu_seconds'] = round(_children_cpu() - cpu_start, 1)
        if record.get('returncode') not in (0, None):
            record['error'] = f'exit status {record["returncode"]}'
        if 'error' not in record and verify is not None:
            try:
                record.update(verify())
            except CheckFailed as e:
                record.update(e.numbers)
                record['error'] = str(e)
            except (OSError, KeyError, ValueError) as e:
                record['error'] = f'{type(e).__name__}: {e}'
        record['ok'] = 'error' not in record
        if not record['ok']:
            record['log_tail'] = _tail(log)
        state = 'ok' if record['ok'] else f'FAILED ({record["error"]})'
        print(f'   {state} in {record["seconds"]}s', flush=True)
        return record['ok']


# --- checks of what the steps wrote ------------------------------------------
def load_state_dict(path: str) -> Dict:
    import torch

    from dsnet_mm.engine.checkpoint import register_safe_globals
    register_safe_globals()
    return torch.load(path, map_location='cpu', weights_only=True)[
        'state_dict']


def data_written(marker: str) -> Dict:
    if not osp.isfile(marker):
        raise CheckFailed(f'{marker} was not written')
    return dict(written=osp.dirname(marker))


def training_log(work_dir: str, iters: int, cuda: bool) -> Dict:
    """The logged iterations of a training: every loss finite and, on CUDA,
    GPU memory used (mmengine logs the peak allocated CUDA memory, 0 for a
    model left on the CPU)."""
    found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not found:
        raise CheckFailed(f'no vis_data/scalars.json under {work_dir}')
    with open(found[-1]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rows = [r for r in rows if 'loss' in r]
    if len(rows) != iters:
        raise CheckFailed(f'{len(rows)} logged training iterations, '
                          f'expected {iters}')
    losses = [r['loss'] for r in rows]
    if not all(math.isfinite(v) for v in losses):
        raise CheckFailed(f'non-finite losses: {losses}')
    out = dict(first_loss=round(losses[0], 4), last_loss=round(losses[-1], 4))
    if cuda:
        memory = max(r.get('memory', 0) for r in rows)
        if memory <= 0:
            raise CheckFailed('no CUDA memory logged: the training did not '
                              'run on the GPU')
        out['cuda_memory_mb'] = memory
    return out


def optim_wrapper_type(log: str, expected: str) -> Dict:
    """The ``optim_wrapper`` type in the config that the training logged
    (mmengine's default ``OptimWrapper`` when it names none)."""
    with open(log, errors='replace') as f:
        text = f.read()
    block = re.search(r'^optim_wrapper = dict\((.*?)^\S', text, re.M | re.S)
    if block is None:
        raise CheckFailed(f'no optim_wrapper in the config logged in {log}')
    found = re.search(r"\btype='(\w+)'\s*\)\s*$", block.group(1))
    kind = found.group(1) if found else 'OptimWrapper'
    if kind != expected:
        raise CheckFailed(f'trained with {kind}, expected {expected}')
    return dict(optim_wrapper=kind)


def teacher_check(paths: List[str], momentum: float) -> Dict:
    """The EMA teacher of Stage I, from the checkpoints of iterations
    1..N.

    Iteration 1 copies the student into the teacher, then takes the first
    EMA step; every later iteration k must give ``t_k = (1 - m) t_{k-1} +
    m s_k`` (``s_k``: the student after the optimizer step of iteration k,
    parameters and floating buffers). Checked: the teacher moved from
    iteration 1 to N (``teacher_moved``), and each step followed the EMA within
    float32 rounding (``ema_max_error``, relative to the operands). A
    teacher whose update is lost on the device (updated tensors that the
    model no longer uses) stays at its iteration-1 weights and fails both.
    """
    import torch
    states = [load_state_dict(p) for p in paths]
    prefix = 'teacher.module.'
    keys = [k for k, v in states[0].items() if k.startswith(prefix)
            and v.is_floating_point()]
    if not keys:
        raise CheckFailed(f'no {prefix}* tensors in {paths[0]}')
    missing = [k for k in keys if k[len(prefix):] not in states[0]]
    if missing:
        raise CheckFailed(f'teacher tensors without a student: {missing[:3]}')
    steps = int(states[-1]['teacher.steps'])
    worst = 0.0
    for prev, cur in zip(states, states[1:]):
        for k in keys:
            t_prev = prev[k].double()
            s_cur = cur[k[len(prefix):]].double()
            expected = (1 - momentum) * t_prev + momentum * s_cur
            error = (cur[k].double() - expected).abs() / (
                1e-6 * (t_prev.abs() + s_cur.abs()) + 1e-12)
            worst = max(worst, float(error.max()))
    first = torch.cat([states[0][k].double().flatten() for k in keys])
    last = torch.cat([states[-1][k].double().flatten() for k in keys])
    change = float((last - first).norm() / first.norm().clamp_min(1e-12))
    moved_tensors = sum(not torch.equal(states[0][k], states[-1][k])
                        for k in keys)
    # ema_max_error: the worst deviation from the EMA step in units of
    # 1e-6 of the operands' magnitude (float32 rounding: below ~1)
    out = dict(teacher_moved=moved_tensors > 0 and worst <= 10.0,
               teacher_relative_change=change,
               teacher_tensors_moved=f'{moved_tensors}/{len(keys)}',
               teacher_max_abs_change=float((last - first).abs().max()),
               ema_max_error=worst, ema_momentum=momentum,
               teacher_steps=steps)
    if steps != len(paths) + 1:
        raise CheckFailed(f'teacher.steps is {steps} after {len(paths)} '
                          f'iterations, expected {len(paths) + 1}', out)
    if moved_tensors == 0:
        raise CheckFailed('the EMA teacher did not move between iteration 1 '
                          f'and {len(paths)}: its update is lost', out)
    if worst > 10.0:
        raise CheckFailed(
            f'the EMA teacher does not follow t_k = (1 - {momentum}) '
            f't_(k-1) + {momentum} s_k: off by {worst:.3g}e-6 of the '
            'operands', out)
    return out


def gate_check(paths: List[str]) -> Dict:
    """Stage II, from the checkpoints of epochs 1 and 2: the gate's slimming
    head (the one part that learns) changed, the frozen rest did not; the
    cost penalty that the routing budget fitted after the last epoch."""
    import torch
    first, last = load_state_dict(paths[0]), load_state_dict(paths[-1])
    changed = [k for k, v in first.items() if v.is_floating_point()
               and not torch.equal(v, last[k])]
    gate = [k for k in changed if '.slim_head.' in k]
    if not gate:
        raise CheckFailed(f'the gate did not learn: no slim_head weight '
                          f'changed from {paths[0]} to {paths[-1]}')
    others = [k for k in changed
              if '.slim_head.' not in k and k != 'cost_penalty']
    if others:
        raise CheckFailed(f'frozen weights changed in Stage II: {others[:5]}')
    return dict(gate_tensors_changed=len(gate),
                cost_penalty=float(last['cost_penalty']))


def test_metrics(path: str, dynamic: bool) -> Dict:
    with open(path) as f:
        metrics = json.load(f)
    names = sorted({k.split('/')[0] for k in metrics if '/' in k})
    wanted = [f'subnet_{k}' for k in range(14)] + ['largest'] + (
        ['dynamic'] if dynamic else [])
    missing = [n for n in wanted if f'{n}/accuracy/top1' not in metrics]
    if missing:
        raise CheckFailed(f'no accuracy/top1 for {missing} in {path} '
                          f'(reported: {names})')
    for n in wanted:
        value = metrics[f'{n}/accuracy/top1']
        if not 0 <= value <= 100:
            raise CheckFailed(f'{n}/accuracy/top1 = {value}')
    out = {f'{n}_top1': round(metrics[f'{n}/accuracy/top1'], 2)
           for n in ('subnet_0', 'largest', 'dynamic') if n in wanted}
    out['evaluated'] = len(wanted)
    return out


def benchmark_result(path: str, cuda: bool) -> Dict:
    with open(path) as f:
        result = json.load(f)
    device = result['device']
    if cuda == device.startswith('cpu'):
        raise CheckFailed(f'timed on {device!r}')
    rows = result['results']
    seen = {(r['mode'], r['subnet']) for r in rows}
    wanted = {('slice', 'subnet_0'), ('static', 'subnet_0'),
              ('dynamic', 'routed'), ('static', 'equal_madds'),
              ('static', 'routed_limit')}
    if not wanted <= seen:
        raise CheckFailed(f'missing rows {sorted(wanted - seen)}')
    bad = [r for r in rows if not (math.isfinite(r['median_ms'])
                                   and r['median_ms'] > 0)]
    if bad:
        raise CheckFailed(f'bad latencies: {bad[:3]}')
    ratios = {}
    for bs, summary in result['summary'].items():
        ratios[bs] = {
            k: summary[k]
            for k in ('slice_over_static', 'dynamic_throughput_ratio',
                      'dynamic_over_routed_limit') if k in summary
        }
    return dict(device=device, rows=len(rows), ratios=ratios)


def export_result(out_dir: str) -> Dict:
    with open(osp.join(out_dir, 'dynamic.json')) as f:
        manifest = json.load(f)
    check = manifest['check']
    # export_dynamic's rule: 1e-4 of the largest class logit (1e-4 below 1)
    allowed = 1e-4 * max(1.0, check['logits_max_abs'])
    if not check['routes_identical'] or check['logits_max_diff'] > allowed:
        raise CheckFailed(f'export check failed: {check}')
    files = [manifest['pre_gate']] + [m['file'] for m in manifest['window']]
    missing = [f for f in files if not osp.isfile(osp.join(out_dir, f))]
    if missing:
        raise CheckFailed(f'missing exported files {missing}')
    return dict(window=len(manifest['window']),
                logits_max_diff=check['logits_max_diff'],
                gate_logits_max_diff=check['gate_logits_max_diff'],
                routes_identical=check['routes_identical'])


# --- the steps ---------------------------------------------------------------
def both(numbers: Dict, check: Callable[[], Dict]) -> Dict:
    """``numbers`` and those of ``check``, kept if ``check`` fails."""
    try:
        return dict(numbers, **check())
    except CheckFailed as e:
        e.numbers = dict(numbers, **e.numbers)
        raise


def config_facts() -> Dict:
    """The config values the options and checks need."""
    from mmengine.config import Config
    stage1 = Config.fromfile(osp.join(ROOT, STAGE1),
                             import_custom_modules=False)
    stage2 = Config.fromfile(osp.join(ROOT, STAGE2),
                             import_custom_modules=False)
    [budget] = [i for i, h in enumerate(stage2.custom_hooks)
                if h['type'] == 'RoutingBudgetHook']
    return dict(momentum=float(stage1.model.ema_momentum),
                budget_hook=budget)


def data_options(data_root: str, budget_hook: Optional[int],
                 images: Dict[str, Optional[int]]) -> List[str]:
    """``--cfg-options`` that read the graded digits from ``data_root``,
    with ``images[loader]`` images where not None."""
    root = osp.join(data_root, 'graded_digits', 'cifar')
    loaders = ['train_dataloader', 'val_dataloader', 'test_dataloader']
    if budget_hook is not None:
        loaders.append(f'custom_hooks.{budget_hook}.dataloader')
    opts = []
    for loader in loaders:
        opts.append(f'{loader}.dataset.data_root={root}')
        count = images.get(loader.split('.')[0])
        if count is not None:
            opts.append(f'{loader}.dataset.indices={count}')
    return opts


def main() -> int:
    args = parse_args()
    mode = 'dry-run' if args.dry_run else 'cuda'
    s = SETTINGS[mode]
    cuda = mode == 'cuda'
    import torch
    if cuda and not torch.cuda.is_available():
        sys.exit('gpu_check: torch sees no CUDA GPU here (torch '
                 f'{torch.__version__}); run with --dry-run for the CPU '
                 'wiring check')
    work = osp.abspath(args.work_dir)
    if osp.isdir(work) and os.listdir(work):
        if not osp.isdir(osp.join(work, 'logs')):
            sys.exit(f'gpu_check: {work} is not empty and holds no earlier '
                     'check (no logs/): give another --work-dir')
        shutil.rmtree(work)
    data_root = osp.abspath(args.data_root)
    start = time.time()
    run = Runner(work, s['timeout'], start + (args.time_limit or s['limit']))
    py = sys.executable
    facts = config_facts()
    iters1, iters2 = s['stage1_iters'], s['stage2_iters']
    bs = s['batch_size']
    stage1_opts = [
        'default_hooks.checkpoint.by_epoch=False',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=-1',
        'default_hooks.logger.interval=1', 'train_cfg.max_epochs=1',
        f'train_dataloader.batch_size={bs}'
    ]
    stage2_opts = [
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=-1',
        'default_hooks.logger.interval=1', 'train_cfg.max_epochs=2',
        f'train_dataloader.batch_size={bs}'
    ]
    images = dict(test_dataloader=s['test_images'],
                  val_dataloader=s['test_images'])
    stage1_data = data_options(
        data_root, None, dict(images, train_dataloader=bs * iters1))
    stage2_data = data_options(
        data_root, facts['budget_hook'],
        dict(images, train_dataloader=bs * iters2,
             custom_hooks=s['budget_images']))

    marker = osp.join(data_root, 'graded_digits', '.complete')
    if osp.isfile(marker):
        run.steps.append(dict(name='data', ok=True, seconds=0.0,
                              found=osp.dirname(marker)))
        print(f'== data: found {osp.dirname(marker)}', flush=True)
    else:
        run.run('data', [py, 'tools/dataset_converters/write_digits.py',
                         '--out', data_root],
                verify=lambda: data_written(marker))

    def train(name, config, amp, opts, verify, needs):
        out = osp.join(work, name)
        wrapper = ('AmpOptimWrapper' if cuda else 'CPUAmpOptimWrapper') \
            if amp else 'OptimWrapper'
        run.run(name, ['bash', 'tools/dist_train.sh', config, '1',
                       '--work-dir', out, '--no-validate',
                       *(['--amp'] if amp else []), '--cfg-options', *opts],
                verify=lambda: dict(
                    optim_wrapper_type(osp.join(run.logs, f'{name}.log'),
                                       wrapper), **verify(out)),
                needs=needs, env=dict(PORT=str(free_port())))

    def stage1_verify(out):
        paths = [osp.join(out, f'iter_{k}.pth') for k in range(1, iters1 + 1)]
        return both(training_log(out, iters1, cuda),
                    lambda: teacher_check(paths, facts['momentum']))

    def stage2_verify(out):
        paths = [osp.join(out, f'epoch_{k}.pth') for k in (1, 2)]
        return both(training_log(out, 2 * iters2, cuda),
                    lambda: gate_check(paths))

    for amp in (False, True):
        name = 'stage1_amp' if amp else 'stage1'
        train(name, STAGE1, amp, [*stage1_opts, *stage1_data],
              stage1_verify, ['data'])

    stage1_last = osp.join(work, 'stage1', f'iter_{iters1}.pth')
    calibrated = osp.join(work, 'stage1', 'calibrated.pth')
    run.run('calibrate_bn', [
        py, 'tools/calibrate_bn.py', STAGE1, stage1_last, '--out', calibrated,
        '--num-batches', str(s['calib_batches']), '--cfg-options',
        f'train_dataloader.batch_size={bs}', *stage1_data
    ], verify=lambda: dict(size_mb=round(
        osp.getsize(calibrated) / 2**20, 2)), needs=['stage1'])

    from_stage1 = [f'model.stage1_checkpoint={calibrated}']
    for amp in (False, True):
        name = 'stage2_amp' if amp else 'stage2'
        train(name, STAGE2, amp, [*stage2_opts, *from_stage1, *stage2_data],
              stage2_verify, ['calibrate_bn'])

    stage2_last = osp.join(work, 'stage2', 'epoch_2.pth')
    for name, config, ckpt, opts, dynamic, needs in (
            ('test_stage1', STAGE1, stage1_last,
             [f'test_cfg.calibrate.num_batches={s["calib_batches"]}',
              f'train_dataloader.batch_size={bs}', *stage1_data], False,
             'stage1'),
            ('test_stage2', STAGE2, stage2_last, [*from_stage1, *stage2_data],
             True, 'stage2')):
        out = osp.join(work, name)
        metrics = osp.join(out, 'metrics.json')
        run.run(name, [py, 'tools/test.py', config, ckpt, '--work-dir', out,
                       '--out', metrics, '--cfg-options', *opts],
                verify=lambda m=metrics, d=dynamic: test_metrics(m, d),
                needs=[needs])

    export = osp.join(work, 'export')
    run.run('export_dynamic', [
        py, 'tools/export_dynamic.py', STAGE2, stage2_last, '--out', export,
        '--shape', str(s['export_shape']), str(s['export_shape']),
        '--cfg-options', *from_stage1
    ], verify=lambda: export_result(export), needs=['stage2'])

    for arch, config in BENCHMARKS.items():
        out = osp.join(work, f'benchmark_{arch}.json')
        run.run(f'benchmark_{arch}', [
            py, 'tools/analysis/benchmark.py', config, '--device',
            'cuda' if cuda else 'cpu', '--modes', 'slice', 'static',
            'dynamic', '--routing-mix', ROUTING_MIX, '--subnets', '0,-1',
            '--shape', str(s['bench_shape']), str(s['bench_shape']),
            '--batch-sizes', *map(str, s['bench_batch_sizes']),
            *s['bench_timing'], '--json', out
        ], verify=lambda o=out: benchmark_result(o, cuda))

    teacher = [st for st in run.steps if st['name'].startswith('stage1')]
    summary = dict(
        ok=all(st['ok'] for st in run.steps),
        mode=mode,
        device=torch.cuda.get_device_name(0) if cuda else
        f'cpu ({platform.machine()})',
        teacher_moved=bool(teacher) and all(
            st.get('teacher_moved', False) for st in teacher),
        failed=[st['name'] for st in run.steps if not st['ok']],
        seconds=round(time.time() - start, 1),
        cpu_seconds=round(_children_cpu(), 1),
        torch=torch.__version__,
        omp_num_threads=os.environ.get('OMP_NUM_THREADS'),
        work_dir=work,
        steps=run.steps)
    path = osp.join(work, 'gpu_check.json')
    with open(path, 'w') as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))
    print(f"gpu_check: {'PASSED' if summary['ok'] else 'FAILED'} in "
          f"{summary['seconds']}s; summary: {path}", flush=True)
    return 0 if summary['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Distributed BN recalibration and test, and the multi-node launch: N CPU
ranks (gloo) give what one process gives."""
import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.config import Config

from conftest import ROOT, ddp_checks, run_tool
from test_train_tool import SMALL, data_opts

# calibration on 3 batches of 32 (rank 0 runs two, rank 1 one) and a test
# split of 63 images (rank 1's shard is padded to 32, which the gathering
# drops)
EVAL = [o for o in SMALL if 'calibrate' not in o and 'val_interval' not in o
        and 'test_dataloader.dataset.indices' not in o] + [
            'test_dataloader.dataset.indices=63',
            'train_dataloader.batch_size=32'
        ]
STAGE1_CONFIG = osp.join(ROOT, 'configs', 'ds_mbnet_digits.py')
GATE_CONFIG = osp.join(ROOT, 'configs', 'ds_mbnet_digits_gate.py')


def free_port() -> str:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


def tool_env(**variables) -> dict:
    return dict(os.environ, OMP_NUM_THREADS='1',
                PATH=osp.dirname(sys.executable) + os.pathsep +
                os.environ['PATH'], **variables)


def metrics_of_one_process(config: str, checkpoint: str, out,
                           *opts: str) -> dict:
    """tools/test.py in one process: its metrics."""
    proc = run_tool('tools/test.py', config, checkpoint, '--work-dir',
                    str(out.parent / 'one'), '--out', str(out),
                    '--cfg-options', *opts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def metrics_of_two_ranks(config: str, checkpoint: str, out,
                         *opts: str) -> dict:
    """tools/dist_test.sh with 2 CPU ranks: its metrics."""
    proc = subprocess.run(
        ['bash', 'tools/dist_test.sh', config, checkpoint, '2',
         '--work-dir', str(out.parent / 'two'), '--out', str(out),
         '--cfg-options', *opts],
        cwd=ROOT, env=tool_env(PORT=free_port()), capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope='module')
def two_nodes(tmp_path_factory, digits_root):
    """Stage I trained on two "nodes" of one process each: two torchrun
    launches of tools/dist_train.sh (NNODES=2, NODE_RANK=0/1) meeting at
    127.0.0.1. Returns the node logs and node 0's work dir."""
    tmp = tmp_path_factory.mktemp('two_nodes')
    config = tmp / 'stage1.py'
    config.write_text(
        f'_base_ = [{STAGE1_CONFIG!r}]\n'
        "custom_hooks = [dict(type='DDPConsistencyHook', interval=1)]\n")
    port = free_port()
    procs, logs = [], []
    for node in (0, 1):
        logs.append(tmp / f'node{node}.log')
        with open(logs[-1], 'w') as log:
            procs.append(subprocess.Popen(
                ['bash', 'tools/dist_train.sh', str(config), '1',
                 '--work-dir', str(tmp / f'node{node}'), '--no-validate',
                 '--cfg-options', 'train_cfg.max_epochs=2', *EVAL,
                 *data_opts(digits_root)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                env=tool_env(NNODES='2', NODE_RANK=str(node),
                             MASTER_ADDR='127.0.0.1', PORT=port)))
    codes = [p.wait(timeout=600) for p in procs]
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], '\n'.join(t[-3000:] for t in texts)
    return texts, tmp / 'node0'


def test_two_node_launch_ends_with_identical_parameters(two_nodes):
    (log, _), _ = two_nodes
    checks = ddp_checks(log)
    # 128 images / 2 ranks / 32 per batch = 2 iterations per epoch
    assert [int(c[0]) for c in checks] == [1, 2, 3, 4]
    for _, p0, s0, p1, s1 in checks:
        assert p0 == p1 and s0 == s1
    # trained: the parameters changed at every step
    assert len({c[1] for c in checks}) == 4


@pytest.fixture(scope='module')
def gate_checkpoint(two_nodes, digits_root, tmp_path_factory) -> str:
    """A Stage II checkpoint on the two-node supernet whose slimming head
    routes by each image's deviation from the mean squeeze (random directions
    orthogonal to the mean, scaled by the spread), so that the test images
    spread over the window: the tests need routing to gather across ranks,
    not a good gate (one epoch of SGS sends every digit to the widest)."""
    from mmengine.runner import Runner

    from dsnet_mm.engine import build_model_from_cfg
    cfg = Config.fromfile(GATE_CONFIG)
    cfg.model.stage1_checkpoint = str(two_nodes[1] / 'epoch_2.pth')
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.test_dataloader.dataset.update(
        indices=63, data_root=f'{digits_root}/digits/cifar')
    model = build_model_from_cfg(cfg)
    model.init_weights()
    model.eval()
    [head] = [m for name, m in model.named_modules()
              if name.endswith('slim_head')]
    squeezes = []
    hook = head.register_forward_hook(
        lambda m, args, out: squeezes.append(args[0].flatten(1)))
    with torch.no_grad():
        for data in Runner.build_dataloader(cfg.test_dataloader):
            model.test_step(data)
    hook.remove()
    squeeze = torch.cat(squeezes)
    mean = squeeze.mean(0) / squeeze.mean(0).norm()
    weight = torch.randn(head.weight.shape[:2],
                         generator=torch.Generator().manual_seed(0))
    weight -= (weight @ mean)[:, None] * mean
    with torch.no_grad():
        head.weight.copy_(weight[..., None, None] /
                          (squeeze - squeeze.mean(0)).std())
    path = tmp_path_factory.mktemp('gate') / 'stage2.pth'
    torch.save(dict(state_dict=model.state_dict()), path)
    return str(path)


def test_dist_test_equals_one_process(gate_checkpoint, digits_root,
                                     tmp_path):
    """tools/dist_test.sh on 2 ranks = tools/test.py in one: every
    sub-network's top-1 after BN recalibration (3 batches: 2 on rank 0, 1 on
    rank 1) and MAdds, the dynamic model's top-1, mean MAdds and routing."""
    config = str(tmp_path / 'gate_calibrated.py')
    with open(config, 'w') as f:
        f.write(f'_base_ = [{GATE_CONFIG!r}]\n'
                'test_cfg = dict(calibrate=dict(_delete_=True, '
                'num_batches=3))\n')
    opts = [*EVAL, *data_opts(digits_root)]
    one = metrics_of_one_process(config, gate_checkpoint,
                                 tmp_path / 'one.json', *opts)
    two = metrics_of_two_ranks(config, gate_checkpoint, tmp_path / 'two.json',
                               *opts)
    names = [f'subnet_{k}' for k in range(14)] + ['largest']
    top1 = [one[f'{n}/accuracy/top1'] for n in names]
    assert [two[f'{n}/accuracy/top1'] for n in names] == top1
    assert two == one  # and every other metric
    # the table is not trivial: the widths score differently
    assert len(set(top1)) > 1
    routed = {k: v for k, v in one.items()
              if re.fullmatch(r'dynamic/routing/subnet_\d+', k)}
    # every test image counted once, spread over several widths
    assert sum(routed.values()) == 63 and len(routed) > 1
    assert 'dynamic/routing/mean_madds' in one
    # rank 0 wrote the report, with the gathered numbers
    with open(tmp_path / 'two' / 'subnet_results.json') as f:
        report = json.load(f)
    assert [r['metrics']['accuracy/top1'] for r in report['subnets']] == top1
    assert report['dynamic']['madds'] == one['dynamic/routing/mean_madds']


def test_calibration_runs_the_frozen_bn_of_a_stage2_model():
    """DSGateClassifier keeps its supernet in eval mode; recalibration must
    still estimate statistics (not leave the reset row), then restore it."""
    from dsnet_mm.engine import build_model_from_cfg, calibrate_bn
    from dsnet_mm.ops import DSBatchNorm2d
    model = build_model_from_cfg(Config.fromfile(GATE_CONFIG))
    model.train()
    spec = model.backbone.space.subnets[3]
    batch = dict(inputs=[torch.full((3, 32, 32), 200, dtype=torch.uint8)])
    assert calibrate_bn(model, [batch], spec, num_batches=1) == 1
    norm = next(m for m in model.backbone.modules()
                if isinstance(m, DSBatchNorm2d))
    assert norm.num_batches_tracked[spec.stats] == 1
    assert norm.running_mean[spec.stats].abs().sum() > 0
    assert not norm.training


def _calibrate_on_rank(rank: int, port: str, tmp: str) -> dict:
    """Rank ``rank`` of 2: recalibrate sub-network 5 from the shared batches
    (in ``tmp``); the batches used and the resulting state dict."""
    from dsnet_mm.engine import build_model_from_cfg, calibrate_bn
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2,
                            timeout=timedelta(seconds=300))
    try:
        model = build_model_from_cfg(Config.fromfile(STAGE1_CONFIG))
        model.load_state_dict(torch.load(osp.join(tmp, 'model.pth')))
        batches = torch.load(osp.join(tmp, 'batches.pth'))
        spec = model.backbone.space.subnets[5]
        used = calibrate_bn(model, batches, spec, num_batches=5)
        result = dict(used=used, state=model.state_dict())
        torch.save(result, osp.join(tmp, f'rank{rank}.pth'))
        return result
    finally:
        dist.destroy_process_group()


def test_reduced_calibration_statistics_equal_one_process(tmp_path):
    """5 batches on 2 ranks (3 + 2) reduce to the statistics one process
    computes from all 5: to float32 rounding, and exactly the same counts.
    The other rows stay untouched. (This process is rank 0, a spawned one
    rank 1.)"""
    from dsnet_mm.engine import build_model_from_cfg, calibrate_bn
    torch.manual_seed(0)
    model = build_model_from_cfg(Config.fromfile(STAGE1_CONFIG))
    batches = [dict(inputs=[torch.randint(0, 256, (3, 32, 32),
                                          dtype=torch.uint8)
                            for _ in range(8)]) for _ in range(5)]
    torch.save(model.state_dict(), tmp_path / 'model.pth')
    torch.save(batches, tmp_path / 'batches.pth')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = model.backbone.space.subnets[5]
    assert calibrate_bn(model, batches, spec, num_batches=5) == 5
    one = model.state_dict()

    port = free_port()
    rank1 = mp.get_context('spawn').Process(
        target=_calibrate_on_rank, args=(1, port, str(tmp_path)))
    rank1.start()
    try:
        rank0 = _calibrate_on_rank(0, port, str(tmp_path))
    finally:
        rank1.join(timeout=300)
    assert rank1.exitcode == 0
    ranks = [rank0, torch.load(tmp_path / 'rank1.pth')]
    stats = [k for k in one if re.search(r'running_(mean|var)$', k)]
    assert stats
    for rank in ranks:
        assert rank['used'] == 5
        for key in stats:
            torch.testing.assert_close(rank['state'][key], one[key],
                                       rtol=1e-5, atol=1e-6)
            others = torch.arange(len(one[key])) != spec.stats
            assert torch.equal(rank['state'][key][others],
                               before[key][others])
        for key in one:
            if key.endswith('num_batches_tracked'):
                assert rank['state'][key].tolist() == one[key].tolist()
    # the two ranks hold bit-identical statistics
    for key in stats:
        assert torch.equal(ranks[0]['state'][key], ranks[1]['state'][key])


def test_slurm_launcher_starts_a_gloo_group_from_srun_variables(monkeypatch):
    """srun sets SLURM_*; the tools translate them for a CPU group (the
    variables they set are restored by monkeypatch)."""
    from dsnet_mm.engine.cli import distributed
    for name, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1',
                            SLURM_NODELIST='localhost',
                            MASTER_ADDR='127.0.0.1', MASTER_PORT=free_port(),
                            RANK='5', WORLD_SIZE='9', LOCAL_RANK='5').items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv('SLURM_LOCALID', raising=False)
    with distributed('slurm', cpu=True):
        assert dist.get_backend() == 'gloo'
        assert (dist.get_rank(), dist.get_world_size()) == (0, 1)
        assert os.environ['LOCAL_RANK'] == '0'
    assert not dist.is_initialized()
    monkeypatch.delenv('SLURM_NODELIST')
    with pytest.raises(RuntimeError, match='SLURM_NODELIST'):
        with distributed('slurm', cpu=True):
            pass


@pytest.mark.parametrize('script,args,expected', [
    ('slurm_train.sh', ['part', 'job', 'cfg.py', 'work', '--amp'],
     ['train.py', 'cfg.py', '--work-dir=work', '--amp', '--launcher=slurm']),
    ('slurm_test.sh', ['part', 'job', 'cfg.py', 'ckpt.pth', '--out', 'm'],
     ['test.py', 'cfg.py', 'ckpt.pth', '--out', 'm', '--launcher=slurm']),
])
def test_slurm_scripts_pass_the_tool_its_arguments(tmp_path, script, args,
                                                   expected):
    # a stand-in srun that prints what it was asked to run
    srun = tmp_path / 'srun'
    srun.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    srun.chmod(0o755)
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', script), *args],
        env=dict(os.environ, PATH=f'{tmp_path}:{os.environ["PATH"]}',
                 GPUS='4', GPUS_PER_NODE='2'),
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    words = proc.stdout.split()
    assert words[:2] == ['-p', 'part'] and '--ntasks=4' in words and \
        '--ntasks-per-node=2' in words and '--gres=gpu:2' in words
    tool = next(i for i, w in enumerate(words) if w.endswith(expected[0]))
    assert words[tool + 1:] == expected[1:]

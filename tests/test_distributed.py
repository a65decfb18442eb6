# Copyright (c) dsnet_mm contributors. All rights reserved.
"""tools/dist_train.sh: 2 CPU processes (gloo) run the real sandwich step."""
import os
import subprocess
import sys

import pytest

from conftest import ddp_checks
from test_train_tool import SMALL, data_opts


def test_two_ranks_train_identically(tmp_path, digits_root, repo_root):
    env = dict(os.environ, PORT='29517', OMP_NUM_THREADS='1',
               PATH=os.path.dirname(sys.executable) + os.pathsep +
               os.environ['PATH'])
    opts = [o for o in SMALL if 'calibrate' not in o and
            'val_interval' not in o]
    config = tmp_path / 'ddp_check.py'
    config.write_text(
        f"_base_ = [{os.path.join(repo_root, 'configs/ds_mbnet_digits.py')!r}]"
        "\ncustom_hooks = [dict(type='DDPConsistencyHook', interval=1)]\n")
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), '2',
         '--work-dir', str(tmp_path / 'work'), '--no-validate',
         '--cfg-options', 'train_cfg.max_epochs=2',
         'train_dataloader.batch_size=32', *opts, *data_opts(digits_root)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    checks = ddp_checks(log)
    # 128 images / 2 ranks / 32 per batch = 2 iterations per epoch
    assert [int(c[0]) for c in checks] == [1, 2, 3, 4]
    for _, p0, s0, p1, s1 in checks:
        assert p0 == p1 and s0 == s1
    # the ranks sampled random sub-networks, and not always the same ones
    sampled = [s0 for _, _, s0, _, _ in checks]
    assert all('subnet_random0' in s for s in sampled)
    assert len(set(sampled)) > 1
    # and the parameters really changed between checks (training happened)
    assert len({p0 for _, p0, _, _, _ in checks}) == 4


def test_two_ranks_train_the_gate_identically(tmp_path, digits_root,
                                              repo_root):
    """Stage II under DDP: the SGS step runs through the wrapper."""
    import torch
    from mmengine.config import Config

    from dsnet_mm.engine import build_model_from_cfg
    stage1 = build_model_from_cfg(
        Config.fromfile(os.path.join(repo_root, 'configs/ds_mbnet_digits.py')))
    torch.save(dict(state_dict=stage1.state_dict()), tmp_path / 'stage1.pth')
    config = tmp_path / 'ddp_gate.py'
    config.write_text(
        '_base_ = ['
        f"{os.path.join(repo_root, 'configs/ds_mbnet_digits_gate.py')!r}]"
        "\ncustom_hooks = [dict(type='DDPConsistencyHook', interval=1)]\n")
    env = dict(os.environ, PORT='29518', OMP_NUM_THREADS='1',
               PATH=os.path.dirname(sys.executable) + os.pathsep +
               os.environ['PATH'])
    opts = [o for o in SMALL if 'calibrate' not in o and
            'val_interval' not in o]
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), '2',
         '--work-dir', str(tmp_path / 'work'), '--no-validate',
         '--cfg-options', 'train_cfg.max_epochs=1',
         f"model.stage1_checkpoint={tmp_path / 'stage1.pth'}",
         'train_dataloader.batch_size=32', *opts, *data_opts(digits_root)],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    checks = ddp_checks(log)
    assert [int(c[0]) for c in checks] == [1, 2]
    # Stage II samples no sub-networks
    assert all(p0 == p1 and s0 == s1 == '{}' for _, p0, s0, p1, s1 in checks)
    assert checks[0][1] != checks[1][1]  # the gate did learn


def test_tool_block_ends_its_process_group(monkeypatch):
    """A group left alive at exit can abort the process (gloo's threads
    outlive the interpreter): the tools' block destroys it, also on error."""
    import torch.distributed as dist

    from dsnet_mm.engine.cli import distributed
    for name, value in dict(MASTER_ADDR='127.0.0.1', MASTER_PORT='29519',
                            RANK='0', WORLD_SIZE='1').items():
        monkeypatch.setenv(name, value)
    with distributed('none'):
        assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match='stop'):
        with distributed('pytorch'):
            assert dist.get_backend() == 'gloo'
            raise RuntimeError('stop')
    assert not dist.is_initialized()


def test_tool_block_frees_what_holds_its_group_before_ending_it(monkeypatch):
    """A DDP wrapper kept alive by a reference cycle (as mmengine's Runner
    keeps it) is collected while the group is still up, so its reducer never
    outlives the group into interpreter finalization."""
    import gc
    import weakref

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from dsnet_mm.engine.cli import distributed
    for name, value in dict(MASTER_ADDR='127.0.0.1', MASTER_PORT='29520',
                            RANK='0', WORLD_SIZE='1').items():
        monkeypatch.setenv(name, value)
    seen = {}

    class Owner:
        pass

    def run():
        owner = Owner()
        owner.model = DistributedDataParallel(torch.nn.Linear(3, 2))
        owner.model(torch.ones(4, 3)).sum().backward()
        owner.self = owner  # a cycle, as a Runner and its hooks make
        seen['model'] = weakref.ref(owner.model)

    def group_destroyed(*args, **kwargs):
        seen['alive_at_destroy'] = seen['model']() is not None
        return destroy(*args, **kwargs)

    destroy = dist.destroy_process_group
    monkeypatch.setattr(dist, 'destroy_process_group', group_destroyed)
    gc.disable()  # only the block collects
    try:
        with distributed('pytorch'):
            run()
            assert seen['model']() is not None
    finally:
        gc.enable()
    assert seen['alive_at_destroy'] is False
    assert not dist.is_initialized()

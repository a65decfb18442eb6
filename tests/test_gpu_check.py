# Copyright (c) dsnet_mm contributors. All rights reserved.
"""tools/gpu_check.sh --dry-run: every step of the GPU check runs on the CPU
and its JSON summary says so."""
import json
import os
import subprocess
import sys

import pytest

STEPS = ['data', 'stage1', 'stage1_amp', 'calibrate_bn', 'stage2',
         'stage2_amp', 'test_stage1', 'test_stage2', 'export_dynamic',
         'benchmark_ds_mbnet', 'benchmark_ds_resnet50']


def test_dry_run_passes_every_step(tmp_path, graded_root, repo_root):
    work = tmp_path / 'gpu_check'
    env = dict(os.environ, PYTHON=sys.executable,
               OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '1'))
    proc = subprocess.run(
        ['bash', 'tools/gpu_check.sh', '--dry-run', '--work-dir', str(work),
         '--data-root', graded_root],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    summary = json.loads((work / 'gpu_check.json').read_text())
    steps = {s['name']: s for s in summary['steps']}
    assert list(steps) == STEPS
    assert summary['ok'] and summary['failed'] == []
    assert summary['mode'] == 'dry-run'
    for name, step in steps.items():
        assert step['ok'], (name, step)
    assert summary['teacher_moved'] is True
    for name in ('stage1', 'stage2'):
        assert steps[name]['optim_wrapper'] == 'OptimWrapper'
        assert steps[f'{name}_amp']['optim_wrapper'] == 'CPUAmpOptimWrapper'
    for name in ('stage1', 'stage1_amp'):
        step = steps[name]
        assert step['teacher_moved'] is True
        assert step['teacher_relative_change'] > 0
        assert step['ema_max_error'] < 10
        assert step['teacher_steps'] == 4  # the copy + 3 iterations
    assert steps['stage2']['gate_tensors_changed'] > 0
    assert steps['stage2_amp']['gate_tensors_changed'] > 0
    assert steps['test_stage2']['evaluated'] == 16  # 14 + largest + dynamic
    assert steps['export_dynamic']['routes_identical'] is True
    for arch in ('ds_mbnet', 'ds_resnet50'):
        step = steps[f'benchmark_{arch}']
        assert step['device'].startswith('cpu')
        assert step['ratios']['2']['dynamic_throughput_ratio'] > 0
    # the summary is also the last thing printed
    assert 'gpu_check: PASSED' in proc.stdout


def test_without_a_gpu_it_says_so(tmp_path, repo_root):
    import torch
    if torch.cuda.is_available():
        pytest.skip('needs a machine without a CUDA GPU')
    proc = subprocess.run(
        ['bash', 'tools/gpu_check.sh', '--work-dir', str(tmp_path / 'w')],
        cwd=repo_root, env=dict(os.environ, PYTHON=sys.executable),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'torch sees no CUDA GPU' in proc.stderr
    assert '--dry-run' in proc.stderr


def _gpu_check_module(repo_root):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'gpu_check', os.path.join(repo_root, 'tools', 'gpu_check.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_run(tmp_path, teacher_update, iters=4):
    """Checkpoints of iterations 1..iters of a fake Stage I run whose
    student takes random steps and whose teacher follows
    ``teacher_update(teacher, student)``."""
    import torch
    gen = torch.Generator().manual_seed(0)
    # a weight (rows 0-5) and a BN buffer (row 6) of the student
    student = torch.cat([torch.randn(6, 5, generator=gen),
                         torch.rand(1, 5, generator=gen) + 0.5])
    teacher = student.clone()  # iteration 1: the copy of the student
    paths = []
    for k in range(1, iters + 1):
        if k > 1:
            student = student + 0.1 * torch.randn(7, 5, generator=gen)
            teacher = teacher_update(teacher, student)
        state = {
            'backbone.w': student[:6].clone(),
            'backbone.bn.running_var': student[6].clone(),
            'backbone.bn.num_batches_tracked': torch.tensor(k),
            'teacher.module.backbone.w': teacher[:6].clone(),
            'teacher.module.backbone.bn.running_var': teacher[6].clone(),
            'teacher.module.backbone.bn.num_batches_tracked':
            torch.tensor(k), 'teacher.steps': torch.tensor(k + 1)
        }
        paths.append(str(tmp_path / f'iter_{k}.pth'))
        torch.save(dict(state_dict=state), paths[-1])
    return paths


def test_teacher_check_passes_a_real_ema(tmp_path, repo_root):
    gpu_check = _gpu_check_module(repo_root)
    paths = _write_run(tmp_path, lambda t, s: t.lerp(s, 0.05))
    out = gpu_check.teacher_check(paths, 0.05)
    assert out['teacher_moved'] is True
    assert out['teacher_tensors_moved'] == '2/2'
    assert out['ema_max_error'] < 1


def test_teacher_check_fails_a_teacher_that_stays(tmp_path, repo_root):
    """What a GPU run shows when the EMA writes into tensors that the model
    no longer uses: the teacher keeps its weights of iteration 1."""
    gpu_check = _gpu_check_module(repo_root)
    paths = _write_run(tmp_path, lambda t, s: t)
    with pytest.raises(gpu_check.CheckFailed, match='did not move'):
        gpu_check.teacher_check(paths, 0.05)


def test_teacher_check_fails_a_teacher_off_the_ema(tmp_path, repo_root):
    gpu_check = _gpu_check_module(repo_root)
    paths = _write_run(tmp_path, lambda t, s: t.lerp(s, 0.5))
    with pytest.raises(gpu_check.CheckFailed, match='does not follow'):
        gpu_check.teacher_check(paths, 0.05)

# Copyright (c) dsnet_mm contributors. All rights reserved.
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='session')
def repo_root() -> str:
    return ROOT


@pytest.fixture(scope='session')
def digits_root(tmp_path_factory) -> str:
    """The embedded digits data written once for the whole session."""
    from dsnet_mm.datasets import write_digits
    root = str(tmp_path_factory.mktemp('data'))
    write_digits(root)
    return root


@pytest.fixture(scope='session')
def graded_root(tmp_path_factory) -> str:
    """The graded digits written once for the whole session."""
    from dsnet_mm.datasets import write_graded_digits
    root = str(tmp_path_factory.mktemp('graded'))
    write_graded_digits(root)
    return root


def run_tool(*args: str, cwd: str = ROOT):
    """Run a repo tool with the interpreter of the test session."""
    import subprocess
    return subprocess.run([sys.executable, *args], cwd=cwd, text=True,
                          capture_output=True, timeout=1200)


def randomize_bn(model):
    """Give every DSBatchNorm2d random statistics and scales (a fresh model's
    identity BN would hide statistics-row and folding mistakes)."""
    import torch
    from dsnet_mm.ops import DSBatchNorm2d
    for m in model.modules():
        if isinstance(m, DSBatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model


def ddp_checks(log: str):
    """``(iteration, digest0, sampled0, digest1, sampled1)`` of every
    ``DDPConsistencyHook`` line of a 2-rank training log."""
    import re
    return re.findall(r'DDP check at iter (\d+): rank 0: params (\w+) '
                      r'sampled (\{.*?\}); rank 1: params (\w+) sampled '
                      r'(\{.*?\})', log)

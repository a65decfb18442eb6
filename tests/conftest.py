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


def run_tool(*args: str, cwd: str = ROOT):
    """Run a repo tool with the interpreter of the test session."""
    import subprocess
    return subprocess.run([sys.executable, *args], cwd=cwd, text=True,
                          capture_output=True, timeout=1200)

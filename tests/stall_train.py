# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Run tools/train.py, stalled at one moment for a test to SIGKILL it there.

``python tests/stall_train.py MOMENT ITER MARKER [tools/train.py args]``

Once iteration ``ITER`` (0-based, as the message hub's ``iter``) is reached,
the process creates the file ``MARKER`` and sleeps at ``MOMENT``:

- ``step``: inside the iteration's optimizer step (gradients computed,
  weights not yet updated);
- ``save``: inside the checkpoint write after the iteration, its bytes in
  the temporary file, before they are synced and renamed into place;
- ``val``: inside the validation after the iteration (the last of an
  epoch), at its second batch: the first sub-network is recalibrated and
  evaluated, the others not yet.

Stalling at a named point instead of killing after a delay makes the test
hit the same moment on every machine.
"""
import os
import os.path as osp
import runpy
import sys
import time

from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper

from dsnet_mm.engine import SubnetValLoop

TRAIN = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools',
                 'train.py')


def stall_in(owner, name: str, iteration: int, marker: str,
             at_call: int = 1) -> None:
    """Make ``owner.name`` stall at its ``at_call``-th call in
    ``iteration``."""
    original = getattr(owner, name)
    calls = [0]

    def stalling(*args, **kwargs):
        if MessageHub.get_current_instance().get_info('iter') == iteration:
            calls[0] += 1
            if calls[0] == at_call:
                open(marker, 'w').close()
                time.sleep(3600)
        return original(*args, **kwargs)

    setattr(owner, name, stalling)


def main() -> None:
    moment, iteration, marker, *args = sys.argv[1:]
    owner, name, at_call = dict(
        step=(OptimWrapper, 'step', 1),
        save=(os, 'fsync', 1),
        val=(SubnetValLoop, 'run_iter', 2))[moment]
    stall_in(owner, name, int(iteration), marker, at_call)
    sys.argv = [TRAIN, *args]
    runpy.run_path(TRAIN, run_name='__main__')


if __name__ == '__main__':
    main()

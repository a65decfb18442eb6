# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Checkpoints load with weights_only=True; foreign globals are refused."""
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import dsnet_mm  # noqa: F401 (registers the allow-list)


def test_mmengine_objects_load_with_weights_only(tmp_path):
    buf = HistoryBuffer()
    buf.update(1.5)
    buf.update(2.5)
    obj = dict(hub=dict(loss=buf), meta=dict(arr=np.arange(3.0),
                                              scalar=np.float64(2.0)),
               w=torch.ones(2))
    torch.save(obj, tmp_path / 'ckpt.pth')
    back = torch.load(tmp_path / 'ckpt.pth', weights_only=True)
    assert back['hub']['loss'].mean() == 2.0
    assert back['meta']['arr'].tolist() == [0.0, 1.0, 2.0]
    assert back['meta']['scalar'] == 2.0


@pytest.mark.parametrize('writer', ['numpy.core.multiarray',
                                    'numpy._core.multiarray'])
def test_numpy_arrays_of_either_numpy_load(tmp_path, writer):
    """A checkpoint names numpy's array functions by the module of the numpy
    that wrote it (numpy.core.multiarray on 1.x, numpy._core.multiarray on
    2.x): a checkpoint of either loads weights-only on this numpy."""
    obj = dict(arr=np.arange(3.0), scalar=np.float64(2.0))
    path = tmp_path / 'ckpt.pth'
    # the legacy format is one plain pickle stream: the names can be edited
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    here = np.arange(1).__reduce__()[0].__module__.encode()
    data = path.read_bytes()
    assert b'\n_reconstruct\n' in data and here in data
    path.write_bytes(data.replace(here + b'\n', writer.encode() + b'\n'))
    back = torch.load(path, weights_only=True)
    assert back['arr'].tolist() == [0.0, 1.0, 2.0]
    assert back['scalar'] == 2.0


class _RunsCode:

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f'touch {self.path}', ))


class _Getattr:

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


def test_a_pickle_with_a_foreign_global_is_refused_without_running(tmp_path):
    marker = tmp_path / 'pwned'
    torch.save({'x': _RunsCode(marker)}, tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / 'evil.pth', weights_only=True)
    assert not marker.exists()


def test_getattr_is_restricted_to_history_buffer_statistics(tmp_path):
    torch.save({'x': _Getattr()}, tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
        torch.load(tmp_path / 'evil.pth', weights_only=True)


def test_tools_refuse_an_untrusted_checkpoint_with_advice(tmp_path,
                                                          digits_root):
    from conftest import run_tool
    from test_train_tool import SMALL, data_opts
    marker = tmp_path / 'pwned'
    torch.save({'state_dict': {}, 'meta': _RunsCode(marker)},
               tmp_path / 'evil.pth')
    proc = run_tool('tools/test.py', 'configs/ds_mbnet_digits.py',
                    str(tmp_path / 'evil.pth'), '--work-dir',
                    str(tmp_path / 'work'), '--cfg-options', *SMALL,
                    *data_opts(digits_root))
    assert proc.returncode != 0
    assert 'refused by weights-only loading' in proc.stderr
    assert '--trust-checkpoint' in proc.stderr
    assert not marker.exists()


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    from mmengine.runner.checkpoint import save_checkpoint
    path = tmp_path / 'epoch_1.pth'
    save_checkpoint({'state_dict': {'w': torch.ones(3)}}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)['state_dict']['w'],
                       torch.ones(3))

    def crash(fd):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(OSError, match='disk full'):
        save_checkpoint({'state_dict': {'w': torch.zeros(3)}}, str(path))
    # the previous checkpoint is intact and no partial file is left behind
    assert torch.equal(torch.load(path, weights_only=True)['state_dict']['w'],
                       torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']


def test_tools_name_a_truncated_checkpoint(tmp_path, digits_root):
    from conftest import run_tool
    from test_train_tool import SMALL, data_opts
    torch.save({'state_dict': {'w': torch.ones(1000)}}, tmp_path / 'ok.pth')
    data = (tmp_path / 'ok.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    proc = run_tool('tools/test.py', 'configs/ds_mbnet_digits.py',
                    str(tmp_path / 'cut.pth'), '--work-dir',
                    str(tmp_path / 'work'), '--cfg-options', *SMALL,
                    *data_opts(digits_root))
    assert proc.returncode != 0
    assert 'truncated or corrupt' in proc.stderr

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Tests of the embedded real data (scikit-learn's digits)."""
import hashlib
import os
import os.path as osp
import pickle
import shutil

import numpy as np
import pytest

from dsnet_mm.datasets import DIGITS_CLASSES, DigitsCIFAR10
from dsnet_mm.datasets import digits as digits_mod
from dsnet_mm.datasets import write_digits

NUM_TRAIN = 1437
NUM_TEST = 360


def _tree_md5(folder: str) -> dict:
    """Relative path -> md5 for every file under ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, folder)] = hashlib.md5(
                    f.read()).hexdigest()
    return out


@pytest.fixture(scope='module')
def root(digits_root) -> str:
    """The session's data (conftest), written once by ``write_digits``."""
    return digits_root


@pytest.fixture(scope='module')
def sklearn_digits():
    from sklearn.datasets import load_digits
    return load_digits()


def _cifar(root: str, split: str) -> DigitsCIFAR10:
    return DigitsCIFAR10(
        data_root=osp.join(root, 'digits', 'cifar'), split=split)


def test_layout_and_marker(root):
    final = osp.join(root, 'digits')
    assert sorted(os.listdir(root)) == ['digits']  # no temp folders left
    assert osp.isfile(osp.join(final, '.complete'))
    cifar = osp.join(final, 'cifar', 'digits-batches-py')
    assert sorted(os.listdir(cifar)) == [
        'batches.meta', 'data_batch_1', 'test_batch'
    ]
    for split, subdir in (('train', 'train'), ('test', 'val')):
        assert sorted(os.listdir(osp.join(final, 'imagenet', subdir))) == \
            list(DIGITS_CLASSES)
    assert digits_mod.is_complete(final)


def test_written_twice_identical(root, tmp_path):
    write_digits(str(tmp_path))
    first = _tree_md5(osp.join(root, 'digits'))
    second = _tree_md5(osp.join(str(tmp_path), 'digits'))
    assert first == second
    cifar = {
        osp.basename(k): v
        for k, v in first.items() if k.startswith('cifar')
    }
    assert cifar == digits_mod.CIFAR_MD5


def test_pickles_are_cifar_like(root):
    folder = osp.join(root, 'digits', 'cifar', 'digits-batches-py')
    with open(osp.join(folder, 'data_batch_1'), 'rb') as f:
        entry = pickle.load(f, encoding='latin1')
    assert isinstance(entry['data'], np.ndarray)
    assert entry['data'].dtype == np.uint8
    assert entry['data'].shape == (NUM_TRAIN, 3072)
    assert entry['data'].flags.writeable
    assert isinstance(entry['labels'], list)
    assert all(type(x) is int for x in entry['labels'])
    with open(osp.join(folder, 'batches.meta'), 'rb') as f:
        meta = pickle.load(f, encoding='latin1')
    assert meta['label_names'] == list(DIGITS_CLASSES)
    # The array is stored without NumPy's version-specific array pickle.
    import pickletools
    with open(osp.join(folder, 'data_batch_1'), 'rb') as f:
        ops = list(pickletools.genops(f.read()))
    globals_ = {arg for op, arg, _ in ops if op.name == 'GLOBAL'}
    assert globals_ == {
        'numpy reshape', 'numpy frombuffer', 'builtins bytearray'
    }


def test_split(sklearn_digits):
    labels = sklearn_digits.target
    train_idx, test_idx = digits_mod.stratified_split(labels)
    assert len(train_idx) == NUM_TRAIN and len(test_idx) == NUM_TEST
    assert np.intersect1d(train_idx, test_idx).size == 0
    assert len(np.union1d(train_idx, test_idx)) == len(labels)
    # Stratified: every class' test share is within one sample of 20 %.
    for cls in range(10):
        total = np.sum(labels == cls)
        in_test = np.sum(labels[test_idx] == cls)
        assert abs(in_test - total * NUM_TEST / len(labels)) < 1


def test_resize_matches_opencv_geometry():
    import cv2
    rng = np.random.RandomState(0)
    img = rng.randint(0, 17, size=(8, 8)).astype(np.float32)
    ours = digits_mod.resize_bilinear(img[None], 32)[0]
    ref = cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    const = digits_mod.resize_bilinear(np.full((1, 8, 8), 16.0), 32)
    assert np.all(const == 16.0)


@pytest.mark.parametrize('split,num', [('train', NUM_TRAIN),
                                       ('test', NUM_TEST)])
def test_cifar_loads_through_mmpretrain(root, sklearn_digits, split, num):
    dataset = _cifar(root, split)
    assert len(dataset) == num
    assert dataset.metainfo['classes'] == DIGITS_CLASSES
    assert len(dataset.CLASSES) == 10
    img = dataset[0]['img']
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8

    train_idx, test_idx = digits_mod.stratified_split(sklearn_digits.target)
    idx = train_idx if split == 'train' else test_idx
    labels = [dataset.get_data_info(i)['gt_label'] for i in range(num)]
    np.testing.assert_array_equal(labels, sklearn_digits.target[idx])

    # Pixels are the bilinear 32x32 version of sklearn's image, 0..255.
    info = dataset.get_data_info(5)
    source = sklearn_digits.images[idx[5]]
    expected = np.floor(
        digits_mod.resize_bilinear(source[None], 32)[0] * 255 / 16 + 0.5)
    for c in range(3):
        np.testing.assert_array_equal(info['img'][..., c], expected)
    assert info['img'].max() > 200  # scaled to 0..255, not left at 0..16


def test_tampered_file_fails_with_clear_message(root, tmp_path):
    data_root = osp.join(str(tmp_path), 'digits', 'cifar')
    shutil.copytree(osp.join(root, 'digits', 'cifar'), data_root)
    path = osp.join(data_root, 'digits-batches-py', 'data_batch_1')
    with open(path, 'r+b') as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(RuntimeError) as err:
        DigitsCIFAR10(data_root=data_root, split='test')
    message = str(err.value)
    assert 'data_batch_1' in message
    assert 'python tools/dataset_converters/write_digits.py --out data' \
        in message

    os.remove(osp.join(data_root, 'digits-batches-py', 'batches.meta'))
    with pytest.raises(RuntimeError, match='batches.meta: missing'):
        DigitsCIFAR10(data_root=data_root, split='train', download=True)


def test_folder_layout_matches_cifar(root):
    from mmpretrain.datasets import CustomDataset, ImageNet
    from mmpretrain.datasets.transforms import LoadImageFromFile

    data_root = osp.join(root, 'digits', 'imagenet')
    load = LoadImageFromFile()
    for split, subdir, num in (('train', 'train', NUM_TRAIN),
                               ('test', 'val', NUM_TEST)):
        cifar = _cifar(root, split)
        by_ann = CustomDataset(
            data_root=data_root,
            ann_file=f'meta/{subdir}.txt',
            data_prefix=subdir,
            metainfo=dict(classes=DIGITS_CLASSES))
        by_folder = CustomDataset(data_root=data_root, data_prefix=subdir)
        imagenet = ImageNet(
            data_root=data_root,
            ann_file=f'meta/{subdir}.txt',
            data_prefix=subdir,
            metainfo=dict(classes=DIGITS_CLASSES))
        for dataset in (by_ann, by_folder, imagenet):
            assert len(dataset) == num
            assert tuple(dataset.metainfo['classes']) == DIGITS_CLASSES
        ann_labels = [
            by_ann.get_data_info(i)['gt_label'] for i in range(num)
        ]
        cifar_labels = [
            cifar.get_data_info(i)['gt_label'] for i in range(num)
        ]
        assert ann_labels == cifar_labels
        assert sorted(
            by_folder.get_data_info(i)['gt_label']
            for i in range(num)) == sorted(cifar_labels)
        for i in (0, 1, num // 2, num - 1):
            bgr = load(dict(img_path=by_ann.get_data_info(i)['img_path']))
            np.testing.assert_array_equal(bgr['img'][..., ::-1],
                                          cifar.get_data_info(i)['img'])


def test_marker_makes_second_call_a_noop(root, tmp_path):
    out = str(tmp_path)
    write_digits(out)
    final = osp.join(out, 'digits')
    path = osp.join(final, 'cifar', 'digits-batches-py', 'test_batch')
    before = os.stat(path)
    sentinel = osp.join(final, 'imagenet', 'untouched.txt')
    open(sentinel, 'w').close()
    write_digits(out)
    after = os.stat(path)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino,
                                                   after.st_mtime_ns)
    assert osp.exists(sentinel)
    assert sorted(os.listdir(out)) == ['digits']


def test_rewrites_incomplete_or_corrupt(root, tmp_path):
    out = str(tmp_path)
    # A half-written folder without the marker is replaced.
    os.makedirs(osp.join(out, 'digits', 'cifar'))
    write_digits(out)
    assert _tree_md5(osp.join(out, 'digits')) == _tree_md5(
        osp.join(root, 'digits'))
    # A marked folder whose CIFAR files fail their md5 is rewritten, so the
    # command named in the loader's error message repairs the data.
    path = osp.join(out, 'digits', 'cifar', 'digits-batches-py',
                    'test_batch')
    with open(path, 'ab') as f:
        f.write(b'x')
    write_digits(out)
    assert _tree_md5(osp.join(out, 'digits')) == _tree_md5(
        osp.join(root, 'digits'))
    assert sorted(os.listdir(out)) == ['digits']


def test_write_atomically_replaces_only_what_is_not_complete(tmp_path):
    from dsnet_mm.datasets.publish import publish, write_atomically

    def complete(folder):
        return osp.isfile(osp.join(folder, 'done'))

    def fill(content):
        def write(tmp):
            with open(osp.join(tmp, 'data'), 'w') as f:
                f.write(content)
            with open(osp.join(tmp, 'done'), 'w') as f:
                f.write('')
        return write

    def read(folder):
        with open(osp.join(folder, 'data')) as f:
            return f.read()

    root = str(tmp_path)
    final = write_atomically(root, 'set', complete, fill('first'))
    assert final == osp.join(root, 'set') and read(final) == 'first'
    # complete: left as it is
    write_atomically(root, 'set', complete, fill('second'))
    assert read(final) == 'first'

    # a failing writer leaves the folder as it was, and no temporary folder
    def broken(tmp):
        fill('broken')(tmp)
        raise RuntimeError('md5 mismatch')

    os.remove(osp.join(final, 'done'))
    with pytest.raises(RuntimeError, match='md5 mismatch'):
        write_atomically(root, 'set', complete, broken)
    assert read(final) == 'first' and os.listdir(root) == ['set']
    # incomplete: replaced, the stale copy removed
    write_atomically(root, 'set', complete, fill('third'))
    assert read(final) == 'third' and os.listdir(root) == ['set']

    # another writer finished first: its folder stays, this one's is unused
    mine = tmp_path / 'mine'
    mine.mkdir()
    fill('fourth')(str(mine))
    publish(str(mine), final, complete)
    assert read(final) == 'third' and mine.is_dir()

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Packaging: the wheel's contents and metadata, configs by scope
(``dsnet_mm::``), the ``dsnet`` command, the torch floor.

The full install check (a fresh environment, ``pip freeze`` before and after,
the installed tools run from outside the checkout) is
``tools/check_install.sh``.
"""
import configparser
import email
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from mmengine.config import Config

import dsnet_mm
from dsnet_mm.mim import (CHECKOUT_ONLY_TOOLS, available_tools, config_dir,
                          config_path, find_tool, main, tools_dir)
from dsnet_mm.version import TORCH_MIN, check_torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def repo_files(folder: str, suffix: str = '.py') -> set:
    root = osp.join(ROOT, folder)
    return {
        osp.relpath(osp.join(d, f), root).replace(os.sep, '/')
        for d, dirs, files in os.walk(root) for f in files
        if f.endswith(suffix) and '__pycache__' not in d
    }


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """The wheel built (setuptools' PEP 517 backend, no isolation) from a
    copy of what a release holds: the package, configs, tools and the
    project files (links kept, as in a checkout)."""
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'
    skip = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
    for folder in ('dsnet_mm', 'configs', 'tools'):
        shutil.copytree(osp.join(ROOT, folder), src / folder, symlinks=True,
                        ignore=skip)
    for name in ('setup.cfg', 'pyproject.toml', 'README.md', 'LICENSE',
                 'MANIFEST.in', 'CHANGELOG.md'):
        shutil.copy2(osp.join(ROOT, name), src / name)
    proc = subprocess.run(
        [sys.executable, '-c',
         'import sys; from setuptools import build_meta as b; '
         'print(b.build_wheel(sys.argv[1]))', str(tmp / 'dist')],
        cwd=src, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = proc.stdout.strip().splitlines()[-1]
    return zipfile.ZipFile(tmp / 'dist' / name)


def metadata(wheel) -> email.message.Message:
    [name] = [n for n in wheel.namelist() if n.endswith('.dist-info/METADATA')]
    return email.message_from_bytes(wheel.read(name))


def test_wheel_ships_every_config_and_tool(wheel):
    names = set(wheel.namelist())
    configs = {n[len('dsnet_mm/.mim/configs/'):] for n in names
               if n.startswith('dsnet_mm/.mim/configs/')}
    tools = {n[len('dsnet_mm/.mim/tools/'):] for n in names
             if n.startswith('dsnet_mm/.mim/tools/')}
    assert configs == repo_files('configs')
    assert 'ds_mbnet_imagenet.py' in configs and '_base_/graded_digits.py' \
        in configs and 'det/ssd_ds-mbnet_digits_voc.py' in configs
    assert tools == repo_files('tools') - {
        f'{t}.py' for t in CHECKOUT_ONLY_TOOLS}
    assert {'train.py', 'test.py'} <= tools
    # the package, and nothing of the checkout besides the shipped folders
    assert 'dsnet_mm/mim.py' in names and 'dsnet_mm/version.py' in names
    assert not [n for n in names if n.startswith(('tests/', 'configs/',
                                                  'tools/', 'data/'))]


def test_wheel_carries_license_version_and_ranges(wheel):
    names = wheel.namelist()
    [license_file] = [n for n in names if '.dist-info/' in n and
                      n.rsplit('/', 1)[-1] == 'LICENSE']
    text = wheel.read(license_file).decode()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text
    meta = metadata(wheel)
    assert meta['Version'] == dsnet_mm.__version__
    assert meta['License'] == 'Apache-2.0'
    requires = meta.get_all('Requires-Dist')
    torch_req = [r for r in requires if re.match(r'torch\b', r)]
    floor = '.'.join(map(str, TORCH_MIN))
    # a floor, and no cap that would make pip replace an installed torch
    assert torch_req == [f'torch>={floor}'], torch_req
    assert set(meta.get_all('Provides-Extra')) == {'det', 'deploy', 'tests'}
    deploy = {r.split(';')[0].strip() for r in requires
              if 'extra == "deploy"' in r}
    deploy_names = {re.split(r'[<>=]', r)[0] for r in deploy}
    assert deploy_names == {'onnx', 'onnxruntime'}
    [entry_points] = [n for n in names if n.endswith('entry_points.txt')]
    assert 'dsnet = dsnet_mm.mim:main' in wheel.read(entry_points).decode()


def test_setup_cfg_floor_is_the_checked_one():
    """setup.cfg's torch bound and the import-time check agree."""
    cfg = configparser.ConfigParser()
    cfg.read(osp.join(ROOT, 'setup.cfg'))
    reqs = cfg['options']['install_requires'].split()
    [torch_req] = [r for r in reqs if r.startswith('torch')]
    assert torch_req == 'torch>=' + '.'.join(map(str, TORCH_MIN))


def test_check_torch_names_the_floor():
    check_torch('2.6.0')
    check_torch('2.13.0+cpu')
    check_torch('2.7.0a0+git1234')
    with pytest.raises(ImportError, match=r'torch>=2\.6, found torch '
                       r'2\.1\.2\+cu121.*in_order'):
        check_torch('2.1.2+cu121')
    with pytest.raises(ImportError, match='found torch 2.5.1'):
        check_torch('2.5.1')


def test_shipped_folders_are_the_repository_ones():
    """In a checkout (editable install) the package's .mim folders are the
    repository's configs/ and tools/."""
    assert osp.realpath(config_dir()) == osp.realpath(
        osp.join(ROOT, 'configs'))
    assert osp.realpath(tools_dir()) == osp.realpath(osp.join(ROOT, 'tools'))


def test_every_config_resolves_by_scope():
    for rel in sorted(repo_files('configs')):
        assert osp.samefile(config_path(f'dsnet_mm::{rel}'),
                            osp.join(ROOT, 'configs', rel))


def test_config_fromfile_reads_a_scoped_config():
    cfg = Config.fromfile('dsnet_mm::ds_mbnet_digits.py')
    assert osp.samefile(cfg.filename,
                        osp.join(ROOT, 'configs', 'ds_mbnet_digits.py'))
    assert cfg.model.type == 'DSImageClassifier'
    assert cfg.default_scope == 'mmpretrain'  # from its mmpretrain:: base


def test_user_config_inherits_by_scope(tmp_path):
    from dsnet_mm.engine import build_model_from_cfg
    mine = tmp_path / 'my_digits.py'
    mine.write_text("_base_ = ['dsnet_mm::ds_mbnet_digits.py']\n"
                    'train_cfg = dict(max_epochs=1)\n'
                    "model = dict(head=dict(num_classes=7))\n")
    cfg = Config.fromfile(str(mine))
    assert cfg.train_cfg.max_epochs == 1
    assert cfg.train_cfg.type == 'ResumableEpochBasedTrainLoop'
    assert cfg.default_scope == 'mmpretrain'
    # a dsnet_mm:: base is a plain base: no registry scope of its own
    assert '_scope_' not in cfg.model and '_scope_' not in cfg.train_cfg
    model = build_model_from_cfg(cfg)
    assert type(model).__name__ == 'DSImageClassifier'
    assert model.head.num_classes == 7


def test_scoped_detection_config_keeps_its_bases():
    pytest.importorskip('mmdet')
    cfg = Config.fromfile('dsnet_mm::det/ssd_ds-mbnet_digits_voc.py')
    assert cfg.default_scope == 'mmdet'  # its mmdet:: base
    assert 'graded_subnets' in cfg  # its relative ../_base_ base


def test_unknown_scoped_configs_are_named():
    with pytest.raises(FileNotFoundError, match=r"'dsnet_mm::nope\.py': no "
                       r"such config in dsnet_mm's configs"):
        Config.fromfile('dsnet_mm::nope.py')
    with pytest.raises(ValueError, match='relative path under'):
        config_path('dsnet_mm::../setup.cfg')
    with pytest.raises(ValueError, match='relative path under'):
        config_path('dsnet_mm::/etc/passwd')


def test_other_configs_are_left_to_mmengine(tmp_path):
    mine = tmp_path / 'rel.py'
    mine.write_text("_base_ = ['mmpretrain::_base_/default_runtime.py']\n")
    cfg = Config.fromfile(str(mine))
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.default_hooks.timer._scope_ == 'mmpretrain'


def test_converter_default_config_is_shipped():
    from dsnet_mm.engine.cli import converter_parser, load_config
    parser = converter_parser('x', 'source', 'ds_mbnet_imagenet.py')
    args = parser.parse_args(['in.pth', 'out.pth'])
    assert args.config == 'dsnet_mm::ds_mbnet_imagenet.py'
    assert load_config(args.config).model.type == 'DSImageClassifier'


def test_every_tool_is_found_by_name():
    tools = available_tools()
    assert set(tools) == {t[:-len('.py')] for t in repo_files('tools')
                          } - set(CHECKOUT_ONLY_TOOLS)
    assert find_tool('train') == tools['train']
    assert find_tool('analysis/get_flops') == tools['analysis/get_flops']
    assert find_tool('get_flops') == tools['analysis/get_flops']
    assert find_tool('write_digits.py') == \
        tools['dataset_converters/write_digits']
    with pytest.raises(KeyError, match="unknown tool 'trian'.*train"):
        find_tool('trian')


def test_train_tool_names_the_work_dir_after_a_scoped_config():
    import argparse
    import runpy
    tool = runpy.run_path(osp.join(ROOT, 'tools', 'train.py'))
    args = argparse.Namespace(
        launcher='none', work_dir=None, amp=False, no_validate=False,
        resume=None, auto_scale_lr=False,
        config='dsnet_mm::ds_mbnet_digits.py')
    cfg = tool['merge_args'](Config.fromfile(args.config), args)
    assert cfg.work_dir == osp.join('./work_dirs', 'ds_mbnet_digits')


def test_dsnet_command_lists_and_names_the_tools(capsys):
    main([])
    listing = capsys.readouterr().out
    assert 'usage: dsnet TOOL' in listing
    assert 'analysis/get_flops' in listing and 'tools/train.py' in listing
    with pytest.raises(SystemExit) as e:
        main(['trian', '--help'])
    assert e.value.code == 2
    assert "unknown tool 'trian'" in capsys.readouterr().err


def test_dsnet_command_runs_a_tool_from_outside_the_checkout(tmp_path):
    """``python -m dsnet_mm TOOL`` (the ``dsnet`` command) with a scoped
    config, from a directory that is not the checkout."""
    proc = subprocess.run(
        [sys.executable, '-m', 'dsnet_mm', 'get_flops',
         'dsnet_mm::ds_mbnet_digits.py', '--shape', '32', '32'],
        cwd=tmp_path, capture_output=True, text=True,
        env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = proc.stdout.strip().splitlines()[2:]
    assert [r.split()[0] for r in rows] == [str(k) for k in range(14)] + [
        'largest']

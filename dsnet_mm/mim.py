# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The configs and tools shipped inside the package, and the ``dsnet`` command.

As in mmpretrain, the package carries its configs and tools in
``dsnet_mm/.mim/configs`` and ``dsnet_mm/.mim/tools``: in a checkout these
are links to the repository's ``configs/`` and ``tools/``, in a wheel copies
of them. So an installed package (wheel or editable) reaches them by name:

- **configs by scope.** ``Config.fromfile('dsnet_mm::ds_mbnet_digits.py')``
  and ``_base_ = ['dsnet_mm::ds_mbnet_imagenet.py']`` in a user's config
  read the package's configs; a name is a path under ``configs/``
  (``dsnet_mm::det/ssd_ds-mbnet_digits_voc.py``). The configs' own bases
  (relative paths, ``mmpretrain::`` and ``mmdet::``) resolve as usual.
- **tools by name.** ``dsnet train CONFIG ...`` (or
  ``python -m dsnet_mm train CONFIG ...``) runs ``tools/train.py`` with those
  arguments; ``dsnet`` alone lists the tools.

mmengine 0.10.7 resolves ``pkg::path`` only for the OpenMMLab packages it
lists, only in ``_base_`` (not in ``Config.fromfile``), and gives the base
config the package's registry scope. dsnet_mm has no registries of its own:
its modules register into mmpretrain's and mmdet's, and its configs name
their scope through their own bases (``default_scope``). So
:func:`register_config_scope`, called on ``import dsnet_mm``, teaches
``Config.fromfile`` and ``_base_`` the ``dsnet_mm::`` prefix and reads such a
config as a plain base file (no scope of its own); every other path is left to
mmengine. A script that reads a ``dsnet_mm::`` config imports dsnet_mm first
(the tools do).
"""
import os
import os.path as osp
import runpy
import sys
from typing import Dict, List, Optional

from mmengine.config import Config

SCOPE = 'dsnet_mm'
_PREFIX = SCOPE + '::'
_MIM = osp.join(osp.dirname(osp.abspath(__file__)), '.mim')


def _shipped(kind: str) -> str:
    path = osp.join(_MIM, kind)
    if not osp.isdir(path):
        raise FileNotFoundError(
            f'dsnet_mm ships no {kind} at {path}: the package was built '
            f'without dsnet_mm/.mim/{kind} (in a checkout, a link to the '
            f'repository\'s {kind}/ folder). Reinstall it from a release '
            'wheel or from a full checkout.')
    return path


def config_dir() -> str:
    """The folder of the configs shipped with the package."""
    return _shipped('configs')


def tools_dir() -> str:
    """The folder of the tools shipped with the package."""
    return _shipped('tools')


def config_path(name: str) -> str:
    """The file of a shipped config: ``name`` is its path under
    ``configs/``, with or without the ``dsnet_mm::`` prefix.

    Raises:
        FileNotFoundError: no such config; the message names the folder.
    """
    rel = name[len(_PREFIX):] if name.startswith(_PREFIX) else name
    root = config_dir()
    path = osp.normpath(osp.join(root, rel))
    if osp.isabs(rel) or not path.startswith(osp.normpath(root) + os.sep):
        raise ValueError(
            f'{name!r}: a {_PREFIX} config is a relative path under the '
            f'package\'s configs ({root})')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{name!r}: no such config in dsnet_mm\'s configs ({root})')
    return path


def register_config_scope() -> None:
    """Make ``dsnet_mm::NAME`` a config path for ``Config.fromfile`` and in
    ``_base_`` (see the module's notes). Idempotent."""
    if getattr(Config, '_dsnet_mm_scope', False):
        return
    fromfile = Config.fromfile
    get_cfg_path = Config._get_cfg_path

    def fromfile_with_scope(filename, *args, **kwargs):
        if isinstance(filename, str) and filename.startswith(_PREFIX):
            filename = config_path(filename)
        return fromfile(filename, *args, **kwargs)

    def get_cfg_path_with_scope(cfg_path, filename):
        if cfg_path.startswith(_PREFIX):
            # a plain base: no '_scope_', the config's own bases set it
            return config_path(cfg_path), None
        return get_cfg_path(cfg_path, filename)

    fromfile_with_scope.__doc__ = fromfile.__doc__
    Config.fromfile = staticmethod(fromfile_with_scope)
    Config._get_cfg_path = staticmethod(get_cfg_path_with_scope)
    Config._dsnet_mm_scope = True


# --- the dsnet command -------------------------------------------------------
# tools of the checkout only, not shipped (setup.cfg): the GPU check drives
# the repository's launch scripts (tools/gpu_check.sh)
CHECKOUT_ONLY_TOOLS = ('gpu_check', )


def available_tools() -> Dict[str, str]:
    """``{name: script}`` for every tool: the name is the script's path
    under ``tools/`` without ``.py`` (``train``, ``analysis/get_flops``)."""
    root = tools_dir()
    tools = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs
                         if not d.startswith(('.', '_')))
        for file in sorted(files):
            if file.endswith('.py') and not file.startswith('_'):
                path = osp.join(folder, file)
                name = osp.relpath(path, root)[:-len('.py')]
                name = name.replace(os.sep, '/')
                if name not in CHECKOUT_ONLY_TOOLS:
                    tools[name] = path
    return tools


def find_tool(name: str, tools: Optional[Dict[str, str]] = None) -> str:
    """The script of tool ``name``: its path under ``tools/`` without
    ``.py``, or its file name alone where that is unique (``get_flops``).

    Raises:
        KeyError: no such tool, or an ambiguous short name; the message
            lists the tools.
    """
    tools = available_tools() if tools is None else tools
    key = name[:-len('.py')] if name.endswith('.py') else name
    if key in tools:
        return tools[key]
    matches = [t for t in tools if t.rsplit('/', 1)[-1] == key]
    if len(matches) == 1:
        return tools[matches[0]]
    what = 'ambiguous' if matches else 'unknown'
    raise KeyError(f'{what} tool {name!r}; the tools are: '
                   f'{", ".join(sorted(tools))}')


def _usage(tools: Dict[str, str]) -> str:
    width = max(map(len, tools))
    lines = ['usage: dsnet TOOL [ARGS ...]',
             '       python -m dsnet_mm TOOL [ARGS ...]', '',
             "Runs one of dsnet_mm's tools with ARGS; 'dsnet TOOL --help' "
             'shows its options.',
             'Configs shipped with the package are named dsnet_mm::NAME '
             '(e.g. dsnet_mm::ds_mbnet_digits.py).',
             '', 'tools:']
    lines += [f'  {name:<{width}}  tools/{name}.py' for name in sorted(tools)]
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    """``dsnet TOOL [ARGS ...]``: run ``tools/TOOL.py`` with ARGS, as
    ``python tools/TOOL.py ARGS`` in a checkout would."""
    argv = sys.argv[1:] if argv is None else list(argv)
    tools = available_tools()
    if not argv or argv[0] in ('-h', '--help', 'list'):
        print(_usage(tools))
        return
    try:
        script = find_tool(argv[0], tools)
    except KeyError as e:
        print(f'dsnet: {e.args[0]}', file=sys.stderr)
        raise SystemExit(2)
    sys.argv = [script, *argv[1:]]
    sys.path.insert(0, osp.dirname(script))  # as 'python SCRIPT' does
    runpy.run_path(script, run_name='__main__')

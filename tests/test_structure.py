# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The package's shape: imports run one way between its layers, and no
module grows past 500 lines.

Layers, lowest first (a subpackage imports only from lower layers, lazy
imports inside functions included; two subpackages of one layer do not
import each other, so no cycle can form between subpackages):

0. ``version``, ``mim``: the version and the config-scope registration
1. ``ops``: the sliced ops (torch only)
2. ``static``: plain torch layers of a sub-network; ``datasets``
3. ``models``: backbones, gates, heads, classifiers, detectors, losses
4. ``deploy``, ``converters``, ``evaluation``
5. ``analysis``
6. ``engine``
7. ``search``
8. the package's ``__init__`` and ``__main__``
"""
import ast
import os
import os.path as osp
from typing import Dict, Iterator, List, Tuple

import pytest

PACKAGE = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                   'dsnet_mm')
LAYERS = {
    'version': 0, 'mim': 0,
    'ops': 1,
    'static': 2, 'datasets': 2,
    'models': 3,
    'deploy': 4, 'converters': 4, 'evaluation': 4,
    'analysis': 5,
    'engine': 6,
    'search': 7,
    '__init__': 8, '__main__': 8,
}
MAX_LINES = 500


def modules() -> Iterator[Tuple[str, str]]:
    """(dotted name, path) of every module of the package."""
    for folder, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith('.py'):
                path = osp.join(folder, f)
                rel = osp.relpath(path, osp.dirname(PACKAGE))[:-3]
                yield rel.replace(os.sep, '.'), path


def imported(module: str, path: str) -> Iterator[Tuple[str, int]]:
    """(dotted target inside the package, line) of every import in the
    module, at any depth (function-level imports included)."""
    is_init = path.endswith('__init__.py')
    package = module if is_init else module.rsplit('.', 1)[0]
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) -
                                          (node.level - 1)]
                target = '.'.join(base + ([node.module]
                                          if node.module else []))
            else:
                target = node.module or ''
            yield target, node.lineno


def layer_of(module: str) -> str:
    """The top-level part of ``dsnet_mm`` a module belongs to."""
    parts = module.split('.')
    if len(parts) == 1 or module == 'dsnet_mm.__init__':
        return '__init__'
    return parts[1]


def import_violations() -> List[str]:
    found = []
    for module, path in modules():
        src = layer_of(module)
        for target, line in imported(module, path):
            if target != 'dsnet_mm' and not target.startswith('dsnet_mm.'):
                continue
            dst = layer_of(target)
            if dst == src or src not in LAYERS or dst not in LAYERS:
                continue
            if LAYERS[dst] >= LAYERS[src]:
                found.append(f'{path}:{line}: {src} (layer {LAYERS[src]}) '
                             f'imports {target} ({dst}, layer '
                             f'{LAYERS[dst]})')
    return found


def test_every_subpackage_has_a_layer():
    tops = {layer_of(m) for m, _ in modules()}
    assert tops - set(LAYERS) == set(), (
        'a new subpackage: give it a layer in LAYERS (and the module '
        'notes above)')


def test_imports_run_from_higher_to_lower_layers():
    violations = import_violations()
    assert not violations, '\n'.join(violations)


def test_no_module_is_over_500_lines():
    long: Dict[str, int] = {}
    for _, path in modules():
        with open(path) as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            long[osp.relpath(path, PACKAGE)] = n
    assert not long, f'modules over {MAX_LINES} lines: {long}'


@pytest.mark.parametrize('source, expected', [
    # an upward import inside a function is found
    ('def f():\n    from dsnet_mm.engine import cli\n', 'engine'),
    # a relative import that climbs into another subpackage
    ('from ...engine.cli import distributed\n', 'engine'),
])
def test_the_walk_sees_lazy_and_relative_imports(tmp_path, monkeypatch,
                                                 source, expected):
    """The checker itself: a models module importing the engine, lazily or
    relatively, is reported."""
    fake = tmp_path / 'dsnet_mm'
    (fake / 'models' / 'backbones').mkdir(parents=True)
    (fake / 'engine').mkdir()
    (fake / '__init__.py').write_text('')
    (fake / 'engine' / 'cli.py').write_text('')
    (fake / 'models' / 'backbones' / 'bad.py').write_text(source)
    monkeypatch.setattr(__import__(__name__), 'PACKAGE', str(fake))
    violations = import_violations()
    assert len(violations) == 1 and f'imports dsnet_mm.{expected}' in \
        violations[0], violations

# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The user documentation (README.md, docs/) says only what the code does.

Every shell command and inline code span of the documents is parsed: each
``tools/...`` and ``configs/...`` path it names must exist, every ``--option``
given to a tool must be one that tool's argument parser defines (read from
its source, so a renamed option fails here), and every ``--cfg-options`` key
given with a config must name something in that config or an argument of
the type it configures. Links between the documents must resolve, tests they
name must exist, and no line of the documents or the configs may narrate
the project's development history or cite files outside the repository.
The worked example of ``docs/slimmable_backbone.md`` is run.
"""
import ast
import glob
import importlib.util
import inspect
import os
import os.path as osp
import re
import shlex
import sys
from functools import lru_cache
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DOCS = sorted([osp.join(ROOT, 'README.md')] + glob.glob(
    osp.join(ROOT, 'docs', '**', '*.md'), recursive=True))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                           recursive=True))

FENCE = re.compile(r'^```([\w-]*)[^\n]*\n(.*?)^```', re.M | re.S)
SHELL_LANGS = {'bash', 'sh', 'shell', 'console', 'text', ''}
INLINE = re.compile(r'(?<!`)`([^`]+)`(?!`)')
TOOL = re.compile(r'^(?:\./)?(tools/[\w/.-]+\.(?:py|sh))$')
PATH = re.compile(r'(?<![\w/.$-])((?:configs|tools)/[\w./-]*[\w/])')
# a placeholder such as configs/NAME or tools/TOOL.py
PLACEHOLDER = re.compile(r'(^|/)[A-Z][A-Z_]*(\.\w+)?(/|$)')
OPTION = re.compile(r'^\[?(--[A-Za-z][\w-]*)')
# shell wrappers whose extra arguments go to a Python tool; None: to a
# program whose options are not checked here (pytest)
WRAPPED = {
    'tools/dist_train.sh': 'tools/train.py',
    'tools/slurm_train.sh': 'tools/train.py',
    'tools/dist_test.sh': 'tools/test.py',
    'tools/slurm_test.sh': 'tools/test.py',
    'tools/run_demo.sh': 'tools/train.py',
    'tools/run_det_demo.sh': 'tools/train.py',
    'tools/gpu_check.sh': 'tools/gpu_check.py',
    'tools/run_tests.sh': None,
}


def rel(path: str) -> str:
    return osp.relpath(path, ROOT)


def read(path: str) -> str:
    with open(path, encoding='utf-8') as f:
        return f.read()


# --- what the documents contain ------------------------------------------
def shell_blocks(text: str) -> Iterator[str]:
    for lang, body in FENCE.findall(text):
        if lang in SHELL_LANGS:
            yield body


def without_fences(text: str) -> str:
    return FENCE.sub('', text)


def inline_spans(text: str) -> Iterator[str]:
    for span in INLINE.findall(without_fences(text)):
        yield ' '.join(span.split())


def shell_commands(block: str) -> Iterator[str]:
    """The commands of a shell block: continuation lines joined, comments
    dropped, split at ``&&`` and ``;``."""
    block = re.sub(r'\\\n', ' ', block)
    for line in block.splitlines():
        line = re.sub(r'(^|\s)#.*$', '', line).strip()
        for command in re.split(r'&&|;', line):
            if command.strip():
                yield command.strip()


def tokens(command: str) -> List[str]:
    try:
        return shlex.split(command)
    except ValueError:  # an unbalanced quote in prose: split on blanks
        return command.split()


def commands_of(path: str) -> Iterator[str]:
    """Every shell command of a document: its shell blocks' commands and
    the inline code spans that run a tool."""
    text = read(path)
    for block in shell_blocks(text):
        yield from shell_commands(block)
    for span in inline_spans(text):
        if re.search(r'(^|\s)(\./)?tools/\S+\.(py|sh)\b', span):
            yield span


def tool_calls(command: str) -> Iterator[Tuple[str, List[str]]]:
    """``(tool, arguments after it)`` of a command."""
    toks = tokens(command)
    for i, tok in enumerate(toks):
        match = TOOL.match(tok)
        if match:
            yield match.group(1), toks[i + 1:]
            return


def all_code(path: str) -> Iterator[str]:
    text = read(path)
    yield from shell_blocks(text)
    for lang, body in FENCE.findall(text):
        if lang not in SHELL_LANGS:
            yield body
    yield from inline_spans(text)


# --- what the tools accept -----------------------------------------------
def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(call: ast.Call) -> Optional[str]:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(
        func, 'id', None)


def _added_options(node: ast.AST) -> Set[str]:
    return {a.value for call in _calls(node) if _name(call) == 'add_argument'
            for a in call.args
            if isinstance(a, ast.Constant) and isinstance(a.value, str)
            and a.value.startswith('-')}


@lru_cache()
def cli_helpers() -> Dict[str, Set[str]]:
    """The options each helper of ``dsnet_mm/engine/cli.py`` adds, helpers
    called by helpers included."""
    tree = ast.parse(read(osp.join(ROOT, 'dsnet_mm', 'engine', 'cli.py')))
    funcs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    calls = {name: {_name(c) for c in _calls(f)} & set(funcs)
             for name, f in funcs.items()}
    options = {name: _added_options(f) for name, f in funcs.items()}
    changed = True
    while changed:
        changed = False
        for name in funcs:
            extra = set().union(*(options[c] for c in calls[name])) \
                - options[name]
            if extra:
                options[name] |= extra
                changed = True
    return options


@lru_cache()
def tool_options(tool: str) -> Set[str]:
    """The options a Python tool's argument parser defines."""
    tree = ast.parse(read(osp.join(ROOT, tool)))
    helpers = cli_helpers()
    options = _added_options(tree)
    for call in _calls(tree):
        options |= helpers.get(_name(call), set())
    return options


def test_the_option_reader_sees_the_parsers():
    assert {'--work-dir', '--resume', '--cfg-options', '--launcher',
            '--trust-checkpoint'} <= tool_options('tools/train.py')
    assert {'--ema', '--config', '--cfg-options', '--trust-checkpoint'} <= \
        tool_options('tools/convert/official_dsnet.py')
    assert '--routing-mix' in tool_options('tools/analysis/benchmark.py')
    assert '--no-such-option' not in tool_options('tools/train.py')


def test_the_documents_are_found():
    names = {rel(p) for p in DOCS}
    assert {'README.md', 'docs/get_started.md', 'docs/results.md',
            'docs/data_preparation.md', 'docs/slimmable_backbone.md'} <= names
    assert sum(1 for p in DOCS for _ in commands_of(p)) > 50


# --- the checks ----------------------------------------------------------
@pytest.mark.parametrize('doc', DOCS, ids=rel)
def test_named_tools_and_configs_exist(doc):
    missing = sorted({m for code in all_code(doc) for m in PATH.findall(code)
                      if not PLACEHOLDER.search(m)
                      and not osp.exists(osp.join(ROOT, m))})
    assert not missing, f'{rel(doc)} names paths that do not exist: {missing}'


@pytest.mark.parametrize('doc', DOCS, ids=rel)
def test_every_option_is_one_the_tool_defines(doc):
    wrong = []
    for command in commands_of(doc):
        for tool, args in tool_calls(command):
            target = WRAPPED.get(tool, tool) if tool.endswith('.sh') \
                else tool
            used = {m.group(1) for a in args for m in [OPTION.match(a)] if m}
            if not used or target is None:
                continue
            if target.endswith('.sh'):
                wrong.append(f'{tool} takes no options, given {sorted(used)}')
                continue
            unknown = sorted(used - tool_options(target))
            if unknown:
                wrong.append(f'{command!r}: {target} has no {unknown}')
    assert not wrong, f'{rel(doc)}:\n' + '\n'.join(wrong)


def cfg_option_uses() -> Iterator[Tuple[str, str, str]]:
    """``(document, config, key)`` of every ``--cfg-options key=value``
    given to a tool together with its config."""
    for doc in DOCS:
        for command in commands_of(doc):
            for tool, args in tool_calls(command):
                configs = [a for a in args
                           if a.startswith('configs/') and a.endswith('.py')]
                if not configs or '--cfg-options' not in args:
                    continue
                start = args.index('--cfg-options') + 1
                for arg in args[start:]:
                    if arg.startswith('-') or arg.startswith('['):
                        break
                    if '=' in arg:
                        yield rel(doc), configs[0], arg.split('=', 1)[0]


def _registries():
    import mmdet.registry as det
    import mmpretrain.registry as pre
    names = ('MODELS', 'HOOKS', 'LOOPS', 'DATASETS', 'TRANSFORMS',
             'METRICS', 'OPTIM_WRAPPERS', 'PARAM_SCHEDULERS', 'OPTIMIZERS',
             'DATA_SAMPLERS', 'MODEL_WRAPPERS')
    return [getattr(m, n) for m in (pre, det) for n in names
            if hasattr(m, n)]


def _accepts(type_name: str, key: str) -> bool:
    """Whether the class registered as ``type_name`` (or a base it passes
    its keyword arguments to) takes ``key``."""
    for registry in _registries():
        try:
            cls = registry.get(type_name)
        except KeyError:
            cls = None
        if cls is None:
            continue
        for klass in getattr(cls, '__mro__', (cls, )):
            init = getattr(klass, '__init__', None)
            try:
                if key in inspect.signature(init).parameters:
                    return True
            except (TypeError, ValueError):
                continue
        return False
    return False


def _check_key(cfg, key: str) -> Optional[str]:
    """None if ``key`` (dotted, list indices as numbers) names an entry of
    ``cfg`` or an argument of the type of the deepest dict on its path."""
    node = cfg
    for part in key.split('.'):
        if isinstance(node, (list, tuple)):
            if not part.isdigit() or int(part) >= len(node):
                return f'{part!r} is not an index of a {len(node)}-list'
            node = node[int(part)]
        elif hasattr(node, 'keys'):
            if part in node:
                node = node[part]
                continue
            if 'type' in node and _accepts(node['type'], part):
                return None
            return f'{part!r} is neither a key of {sorted(node.keys())} ' \
                f"nor an argument of {node.get('type')!r}"
        else:
            return f'{part!r} goes below a value ({node!r})'
    return None


def test_cfg_options_name_real_entries():
    pytest.importorskip('mmpretrain')
    pytest.importorskip('mmdet')
    from mmengine.config import Config
    import dsnet_mm  # noqa: F401  (registers the types)
    uses = list(cfg_option_uses())
    assert uses, 'no --cfg-options found with a config'
    wrong = []
    loaded = {}
    for doc, config, key in uses:
        if config not in loaded:
            loaded[config] = Config.fromfile(osp.join(ROOT, config))
        problem = _check_key(loaded[config], key)
        if problem:
            wrong.append(f'{doc}: {config} --cfg-options {key}: {problem}')
    assert not wrong, '\n'.join(wrong)


def test_the_key_checker_rejects_a_renamed_key():
    pytest.importorskip('mmpretrain')
    from mmengine.config import Config
    import dsnet_mm  # noqa: F401
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'ds_mbnet_graded_digits_gate.py'))
    assert _check_key(cfg, 'model.sgs_rule') is None
    assert _check_key(cfg, 'param_scheduler.0.T_max') is None
    assert _check_key(cfg, 'model.backbone.init_cfg') is None  # an argument
    assert _check_key(cfg, 'model.sgs_rules') is not None
    assert _check_key(cfg, 'param_scheduler.5.T_max') is not None


# --- links, named tests ----------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r'[`*]|\[|\]\([^)]*\)', '', heading.strip()).lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


@lru_cache()
def anchors(path: str) -> Set[str]:
    return {slug(h) for h in re.findall(r'^#{1,6} (.+)$',
                                        without_fences(read(path)), re.M)}


@pytest.mark.parametrize('doc', DOCS, ids=rel)
def test_links_between_documents_resolve(doc):
    broken = []
    for target in re.findall(r'\]\(([^)\s]+)\)', without_fences(read(doc))):
        if re.match(r'[a-z]+:', target):
            continue
        path, _, anchor = target.partition('#')
        full = osp.normpath(osp.join(osp.dirname(doc), path)) if path \
            else doc
        if not osp.exists(full):
            broken.append(target)
        elif anchor and full.endswith('.md') and anchor not in anchors(full):
            broken.append(f'{target} (no such heading)')
    assert not broken, f'{rel(doc)}: {broken}'


@pytest.mark.parametrize('doc', DOCS, ids=rel)
def test_named_tests_exist(doc):
    missing = []
    for path, name in re.findall(r'(tests/\w+\.py)::(\w+)', read(doc)):
        full = osp.join(ROOT, path)
        if not osp.isfile(full) or not re.search(
                rf'^def {name}\(', read(full), re.M):
            missing.append(f'{path}::{name}')
    assert not missing, f'{rel(doc)} names missing tests: {missing}'


# --- what a user reads: no development history, no outside citations ------
HISTORY = [
    (re.compile(r'\bsessions? \d+'), 'a work session'),
    (re.compile(r"\bsession[- ]\d+|\bthis session\b", re.I), 'a work session'),
    (re.compile(r'\bissue \d+', re.I), 'an internal issue number'),
    (re.compile(r'\bseed 0\d\d\b'), 'an internal seed label'),
    (re.compile(r'\bwas [^;]{1,40}?, now\b'), '"was X, now Y"'),
    (re.compile(r'\((?:new|new,|new;)[ )]'), 'a "(new)" marker'),
    (re.compile(r'\b(?:we|I) (?:tried|then tried)\b|\bwas tried\b|'
                r'\btried first\b', re.I), 'what was tried'),
    (re.compile(r'\bbars? \d+(?:\.\d+)? ?%?\)?'), 'an internal bar'),
    (re.compile(r'\b20\d\d-\d\d-\d\d\b'), 'a dated log'),
    (re.compile(r'\bthe (?:earlier|previous|old) (?:ladder|version|recipe|'
                r'config)\b', re.I), 'an earlier version'),
]


def user_lines() -> Iterator[Tuple[str, int, str]]:
    for path in DOCS + CONFIGS:
        for number, line in enumerate(read(path).splitlines(), 1):
            yield rel(path), number, line


def test_no_line_narrates_development_history():
    found = [f'{path}:{number}: {what}: {line.strip()}'
             for path, number, line in user_lines()
             for pattern, what in HISTORY if pattern.search(line)]
    assert not found, '\n'.join(found)


@pytest.mark.parametrize('line, hit', [
    ('the numbers of session 12 below', True),
    ('issue 16: onnxruntime sessions do not spin', True),
    ('the budget was 0.57, now 0.58', True),
    ('`features=\'pooled\'` (new): the gate reads', True),
    ('onnxruntime sessions do not spin-wait after a run', False),
    ('error bars of +-1 standard error', False),
    ('changlin31/DS-Net#4 and open-mmlab/mmdetection#11063', False),
    ('the random seed 0 of the demo', False),
])
def test_history_markers(line, hit):
    assert any(p.search(line) for p, _ in HISTORY) == hit


OUTSIDE = re.compile(r'([\w./-]*?)((?:dsnet_spec|dsnet_pp_spec|'
                     r'progressive_search|detection|mm_anchors|STACK|DESIGN|'
                     r'STYLE)\.md)')
MARKERS = re.compile(r'UNVERIFIED|§|\.\./shared/|\bseed 00\d\b')


def test_citations_point_into_the_repository():
    """Code comments, docstrings, configs and documents cite documents of
    the repository (docs/reference/...), never notes that are not in it."""
    files = DOCS + CONFIGS + [
        p for d in ('dsnet_mm', 'tools', 'tests')
        for p in glob.glob(osp.join(ROOT, d, '**', '*.*'), recursive=True)
        if p.endswith(('.py', '.sh')) and osp.basename(p) != 'test_docs.py']
    wrong = []
    for path in files:
        for number, line in enumerate(read(path).splitlines(), 1):
            if MARKERS.search(line):
                wrong.append(f'{rel(path)}:{number}: {line.strip()}')
            for prefix, name in OUTSIDE.findall(line):
                target = prefix + name
                here = osp.join(osp.dirname(path), target)
                if not (osp.exists(osp.join(ROOT, target))
                        or path.endswith('.md') and osp.exists(here)):
                    wrong.append(f'{rel(path)}:{number}: {target}')
    assert not wrong, '\n'.join(wrong)


def test_readme_first_screen_has_what_it_is_installation_and_the_commands():
    first = '\n'.join(read(osp.join(ROOT, 'README.md')).splitlines()[:32])
    for needed in ('OpenMMLab', 'bash tools/run_demo.sh',
                   'bash tools/run_tests.sh', '## Installation',
                   'bash tools/setup_env.sh', 'pip install'):
        assert needed in first, needed
    # the two commands come first
    block = next(shell_blocks(first))
    assert list(shell_commands(block))[:2] == [
        'bash tools/run_demo.sh', 'bash tools/run_tests.sh']


def test_the_readme_figure_is_small():
    figures = re.findall(r'!\[[^\]]*\]\(([^)]+)\)',
                         read(osp.join(ROOT, 'README.md')))
    assert figures
    for figure in figures:
        assert os.path.getsize(osp.join(ROOT, figure)) < 200 * 1024


# --- the worked example of docs/slimmable_backbone.md ---------------------
def _example():
    name = 'ds_tiny_vgg'
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, osp.join(ROOT, 'docs', 'examples', f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_worked_example_backbone():
    pytest.importorskip('mmpretrain')
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    import dsnet_mm  # noqa: F401
    from dsnet_mm.deploy import static_subnet
    from dsnet_mm.search import classifier_axes, permute_channels
    example = _example()
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='DSImageClassifier',
        backbone=dict(
            type='DSTinyVGG',
            arch=dict(stem=16, stages=[('stage1', 32, 1, 2),
                                       ('stage2', 64, 2, 2),
                                       ('stage3', 128, 2, 2)]),
            subnets=dict(smallest=dict(stem=8, stage1=16, stage2=16,
                                       stage3=32),
                         widest=dict(stem=8, stage1=16, stage2=64,
                                     stage3=128), num=4)),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='DSLinearClsHead', num_classes=10, in_channels=128,
                  loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1)),
        data_preprocessor=dict(num_classes=10),
        bootstrap='ib', num_random=2))
    assert [s['stage3'] for s in model.backbone.space.subnets] == \
        [32, 64, 96, 128]

    # one sandwich step trains
    optim = build_optim_wrapper(model, dict(
        optimizer=dict(type='SGD', lr=0.1)))
    data = dict(
        inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
                for _ in range(4)],
        data_samples=[DataSample().set_gt_label(i) for i in range(4)])
    log = model.train_step(data, optim)
    assert {'loss_largest', 'loss_smallest'} <= set(log)
    assert torch.isfinite(log['loss'])

    # the static form equals the sliced model at every sub-network
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    space = model.backbone.space
    for spec in [*space.subnets, space.largest]:
        with torch.no_grad(), model.backbone.subnet(spec):
            sliced = model(x, mode='tensor')
        for fold_bn in (True, False):
            static = static_subnet(model, spec, fold_bn)
            with torch.no_grad():
                torch.testing.assert_close(static(x), sliced, rtol=1e-4,
                                           atol=1e-5)

    # cached inference runs the static form in place of the DS layers
    from dsnet_mm.ops import inference_cache
    from dsnet_mm.static.cached import CachedStatic
    with torch.no_grad(), inference_cache(model) as cache, \
            model.backbone.subnet('subnet_1'):
        cached = model(x, mode='tensor')
        plain, = cache._static.values()
        assert isinstance(plain, CachedStatic)
    with torch.no_grad(), model.backbone.subnet('subnet_1'):
        torch.testing.assert_close(cached, model(x, mode='tensor'),
                                   rtol=1e-4, atol=1e-5)

    # describe_channels lists every axis: a reordered network is the same
    with torch.no_grad(), model.backbone.subnet('largest'):
        before = model(x, mode='tensor')
    axes = classifier_axes(model)
    perms = {g: torch.randperm(w) for g, w in space.max_widths.items()}
    permute_channels(model, axes, perms)
    with torch.no_grad(), model.backbone.subnet('largest'):
        torch.testing.assert_close(model(x, mode='tensor'), before,
                                   rtol=1e-4, atol=1e-5)

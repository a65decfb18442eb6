# Copyright (c) dsnet_mm contributors. All rights reserved.
"""The package version, and the oldest torch the package runs on."""
__version__ = '0.1.0'

# setup.cfg's lower bound. torch 2.6 brought what the code relies on:
# weights-only loading with an allow-list of named globals
# (``torch.serialization.add_safe_globals`` with ``(object, name)`` pairs),
# ``DataLoader(in_order=...)`` and ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``.
TORCH_MIN = (2, 6)


def check_torch(version: str = None) -> None:
    """Raise ImportError if torch (or ``version``) is older than
    :data:`TORCH_MIN`.

    pip installs into an environment whose torch already satisfies the
    requirement; this check catches an install without dependency checks
    (``--no-deps``) on an older torch, which would otherwise fail later with
    an unrelated error.
    """
    if version is None:
        import torch
        version = torch.__version__
    release = version.split('+')[0].split('.')
    try:
        found = tuple(int(part) for part in release[:2])
    except ValueError:  # an unparsable development build: let it try
        return
    if found < TORCH_MIN:
        need = '.'.join(map(str, TORCH_MIN))
        raise ImportError(
            f'dsnet_mm needs torch>={need}, found torch {version}. torch '
            f'{need} brought weights-only checkpoint loading with an '
            'allow-list of named globals and DataLoader(in_order=...), which '
            'dsnet_mm uses. Install torch>=' + need + ' and an mmcv built '
            'against it (see docs/get_started.md, Installation).')

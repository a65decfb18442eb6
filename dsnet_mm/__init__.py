# Copyright (c) dsnet_mm contributors. All rights reserved.
"""dsnet_mm: dynamic slimmable networks (DS-Net / DS-Net++) for OpenMMLab.

Importing the package registers its backbones, heads, losses, classifiers,
loops and datasets into mmpretrain's registries, which is what
``custom_imports = dict(imports=['dsnet_mm'])`` relies on. mmrazor is never
imported: the slicing machinery it would provide lives in :mod:`dsnet_mm.ops`.
Importing it also makes the configs shipped with the package readable by
scope, ``Config.fromfile('dsnet_mm::ds_mbnet_digits.py')`` and
``_base_ = ['dsnet_mm::...']`` (:mod:`dsnet_mm.mim`).
"""
from .version import __version__, check_torch  # noqa: F401

check_torch()  # before the modules that need a newer torch fail obscurely

from .mim import register_config_scope  # noqa: E402

register_config_scope()  # 'dsnet_mm::' config paths (Config.fromfile, _base_)

from . import datasets, engine, evaluation, models  # noqa: E402,F401

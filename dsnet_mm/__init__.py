# Copyright (c) dsnet_mm contributors. All rights reserved.
"""dsnet_mm: dynamic slimmable networks (DS-Net / DS-Net++) for OpenMMLab.

Importing the package registers its backbones, heads, losses, classifiers,
loops and datasets into mmpretrain's registries, which is what
``custom_imports = dict(imports=['dsnet_mm'])`` relies on. mmrazor is never
imported: the slicing machinery it would provide lives in :mod:`dsnet_mm.ops`.
"""
from . import datasets, engine, evaluation, models  # noqa: F401 (register)

__version__ = '0.1.0'

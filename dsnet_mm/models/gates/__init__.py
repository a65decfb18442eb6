# Copyright (c) dsnet_mm contributors. All rights reserved.
from .ds_gate import DSGate

__all__ = ['DSGate']

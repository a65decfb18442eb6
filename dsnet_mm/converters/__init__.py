# Copyright (c) dsnet_mm contributors. All rights reserved.
"""Converters from other checkpoint layouts."""
from .official_dsnet import convert_official_dsnet

__all__ = ['convert_official_dsnet']

# Copyright (c) dsnet_mm contributors. All rights reserved.
from .digits import (DIGITS_CLASSES, DigitsCIFAR10, load_digits_split,
                     write_digits)

__all__ = [
    'DIGITS_CLASSES', 'DigitsCIFAR10', 'load_digits_split', 'write_digits'
]

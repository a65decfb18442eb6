# Copyright (c) dsnet_mm contributors. All rights reserved.
from .digits import (DIGITS_CLASSES, DigitsCIFAR10, DigitsFolder,
                     load_digits_split, write_digits)
from .graded_digits import (LEVELS, NUM_LEVELS, GradedDigitsCIFAR10,
                            GradedDigitsFolder, load_graded_split,
                            write_graded_digits)
from .transforms import LoadImageChecked

__all__ = [
    'DIGITS_CLASSES', 'DigitsCIFAR10', 'DigitsFolder', 'LoadImageChecked',
    'load_digits_split', 'write_digits',
    'LEVELS', 'NUM_LEVELS', 'GradedDigitsCIFAR10', 'GradedDigitsFolder',
    'load_graded_split', 'write_graded_digits'
]

try:  # mmdet is the optional 'det' extra (tools/setup_env.sh installs it)
    from .digits_voc import (DigitsVOCDataset, build_digits_voc,
                             write_digits_voc)
except ModuleNotFoundError as e:
    if e.name != 'mmdet':
        raise
else:
    __all__ += ['DigitsVOCDataset', 'build_digits_voc', 'write_digits_voc']

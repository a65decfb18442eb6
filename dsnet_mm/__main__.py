# Copyright (c) dsnet_mm contributors. All rights reserved.
"""``python -m dsnet_mm TOOL [ARGS ...]``: the ``dsnet`` command."""
from dsnet_mm.mim import main

if __name__ == '__main__':
    main()

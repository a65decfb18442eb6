#!/usr/bin/env bash
# Create .venv in the checkout and install the verified stack (versions and why: docs/get_started.md,
# "Installation"). Idempotent: every step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DSNET_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment in $VENV"
    "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
source tools/venv_have.sh  # have SPEC...: installed in $VENV?

if ! have torch==2.13.0 torchvision==0.28.0 ninja wheel; then
    echo "[setup] installing torch 2.13.0 / torchvision 0.28.0"
    # '===' selects the standard registry build: the local CPU-only wheel (+cpu) breaks torchvision ops.
    $PIP install -q "torch===2.13.0" torchvision==0.28.0 "setuptools>=77,<81" wheel ninja numpy
fi
if ! have mmcv==2.1.0; then
    echo "[setup] building mmcv 2.1.0 with its ops (10-40 minutes on 2 cores the first time, then cached by pip)"
    MAX_JOBS=${MAX_JOBS:-2} $PIP install -q --no-build-isolation mmcv==2.1.0
fi
if ! have mmengine==0.10.7 mmpretrain==1.2.0 mmdet==3.3.0 scikit-learn matplotlib onnx onnxruntime pytest pytest-xdist==3.8.0; then
    echo "[setup] installing mmengine, mmpretrain, mmdet and tools"
    $PIP install -q mmengine==0.10.7 mmpretrain==1.2.0 mmdet==3.3.0 scikit-learn matplotlib \
        onnx onnxruntime pytest pytest-xdist==3.8.0
fi
if ! have dsnet_mm; then
    echo "[setup] installing dsnet_mm in editable mode"
    $PIP install -q --no-build-isolation --no-deps -e .
fi
if [ ! -f data/digits/.complete ] || [ ! -f data/graded_digits/.complete ] \
        || [ ! -f data/digits_voc/.complete ]; then
    echo "[setup] writing the embedded digits data (plain, graded, detection) under data/"
    "$VENV/bin/python" tools/dataset_converters/write_digits.py --out data
fi
echo "[setup] environment ready: $VENV"

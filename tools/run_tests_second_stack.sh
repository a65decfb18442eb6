#!/usr/bin/env bash
# Run the test suite on the oldest stack dsnet_mm supports (the lower bounds
# of setup.cfg), in its own virtual environment outside the checkout:
#   Python 3.9, torch 2.6.0 + torchvision 0.21.0, numpy 1.26.4,
#   mmcv 2.1.0 built from source against that torch, mmengine 0.10.7,
#   mmpretrain 1.2.0, mmdet 3.3.0, scikit-learn 1.3.2, matplotlib 3.7.5,
#   onnx 1.17.0, onnxruntime 1.19.2.
# dsnet_mm is installed into it with its declared dependencies; the script
# fails if that changes any installed version (the ranges must accept this
# stack as it is).
#
# Usage: tools/run_tests_second_stack.sh [pytest args]
# Environment:
#   FLOOR_VENV      the environment (default: ~/.cache/dsnet_mm/venv-floor)
#   FLOOR_PYTHON    a Python 3.9 interpreter (default: python3.9, or pyenv's)
#   MAX_JOBS        compile jobs for mmcv (default 2; 10-40 minutes on 2 cores)
#   PYTEST_WORKERS  pytest-xdist workers (default 2)
# Idempotent: every step is skipped when its result is already there. mmcv is
# built without pip's wheel cache, so a wheel built for another torch is never
# reused (and this one never reaches other environments).
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
VENV=${FLOOR_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/dsnet_mm/venv-floor}

find_python() {
    if [ -n "${FLOOR_PYTHON:-}" ]; then
        echo "$FLOOR_PYTHON"
        return
    fi
    if python3.9 -c '' >/dev/null 2>&1; then
        command -v python3.9
        return
    fi
    local root
    root=$(pyenv root 2>/dev/null || true)
    for py in "$root"/versions/3.9*/bin/python3.9; do
        if [ -x "$py" ]; then
            echo "$py"
            return
        fi
    done
    echo "no Python 3.9 found: set FLOOR_PYTHON to a Python 3.9 interpreter" >&2
    exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY=$(find_python)
    echo "[floor] creating $VENV with $PY"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 9), sys.version' \
    || { echo "[floor] $VENV is not a Python 3.9 environment: remove it" >&2; exit 1; }

# the whole stack, pinned: every install below keeps to it
CONSTRAINTS="$VENV/floor-constraints.txt"
cat > "$CONSTRAINTS" <<'EOF'
torch==2.6.0
torchvision==0.21.0
numpy==1.26.4
mmcv==2.1.0
mmengine==0.10.7
mmpretrain==1.2.0
mmdet==3.3.0
scikit-learn==1.3.2
matplotlib==3.7.5
onnx==1.17.0
onnxruntime==1.19.2
pytest-xdist==3.8.0
EOF
PIP="$VENV/bin/python -m pip"
source tools/venv_have.sh  # have SPEC...: installed in $VENV?

if ! have torch==2.6.0 torchvision==0.21.0 numpy==1.26.4 ninja wheel; then
    echo "[floor] installing torch 2.6.0, torchvision 0.21.0, numpy 1.26.4"
    $PIP install -q -c "$CONSTRAINTS" torch torchvision numpy \
        "setuptools>=64,<81" wheel ninja
fi
if ! have mmcv==2.1.0; then
    echo "[floor] building mmcv 2.1.0 against torch 2.6.0 (10-40 minutes on 2 cores)"
    MAX_JOBS=${MAX_JOBS:-2} $PIP install -q --no-build-isolation --no-cache-dir \
        -c "$CONSTRAINTS" mmcv
fi
# a wheel built against another torch fails here (undefined symbols)
"$VENV/bin/python" -c 'import mmcv.ops, torch; mmcv.ops.nms(torch.rand(4, 4) * 9, torch.rand(4), 0.5)' \
    || { echo "[floor] mmcv's ops do not load against this torch" >&2; exit 1; }
if ! have mmengine==0.10.7 mmpretrain==1.2.0 mmdet==3.3.0 scikit-learn==1.3.2 \
        matplotlib==3.7.5 onnx==1.17.0 onnxruntime==1.19.2 pytest pytest-xdist; then
    echo "[floor] installing mmengine, mmpretrain, mmdet and the test tools"
    $PIP install -q -c "$CONSTRAINTS" mmengine mmpretrain mmdet scikit-learn \
        matplotlib onnx onnxruntime pytest pytest-xdist
fi
if ! have dsnet_mm; then
    echo "[floor] installing dsnet_mm (editable) with its declared dependencies"
    BEFORE=$($PIP freeze --exclude-editable | grep -iv '^dsnet[_-]mm' || true)
    $PIP install -q --no-build-isolation -e '.[det,deploy,tests]'
    AFTER=$($PIP freeze --exclude-editable | grep -iv '^dsnet[_-]mm' || true)
    if [ "$BEFORE" != "$AFTER" ]; then
        echo "[floor] installing dsnet_mm changed the stack:" >&2
        diff <(echo "$BEFORE") <(echo "$AFTER") >&2 || true
        exit 1
    fi
fi
if [ ! -f data/digits/.complete ] || [ ! -f data/graded_digits/.complete ] \
        || [ ! -f data/digits_voc/.complete ]; then
    echo "[floor] writing the embedded digits data under data/"
    "$VENV/bin/python" tools/dataset_converters/write_digits.py --out data
fi
SETUP=$(( $(date +%s) - START ))
echo "[floor] environment ready: $VENV (set-up: ${SETUP} s)"
"$VENV/bin/python" - <<'PYEOF'
import importlib.metadata as md, platform
names = ['torch', 'torchvision', 'numpy', 'mmcv', 'mmengine', 'mmpretrain',
         'mmdet', 'scikit-learn', 'matplotlib', 'onnx', 'onnxruntime']
print('[floor] Python', platform.python_version(), '|',
      ', '.join(f'{n} {md.version(n)}' for n in names))
PYEOF

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
TESTS_START=$(date +%s)
rc=0
"$VENV/bin/python" -m pytest -p no:cacheprovider -n "${PYTEST_WORKERS:-2}" tests "$@" || rc=$?
echo "[floor] set-up: ${SETUP} s, tests: $(( $(date +%s) - TESTS_START )) s, pytest exit status ${rc}"
exit $rc

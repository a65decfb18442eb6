#!/usr/bin/env bash
# Check the wheel as a user installs it, into an environment that already
# holds the stack:
#   1. a fresh virtual environment with only the stack (torch, torchvision,
#      mmcv built with its ops, mmengine, mmpretrain, mmdet);
#   2. the wheel built from this checkout, installed with pip: no installed
#      version may change (pip freeze before and after; new packages are
#      listed);
#   3. from a directory outside the checkout: the shipped configs load by
#      scope (Config.fromfile('dsnet_mm::...'), _base_ = ['dsnet_mm::...']),
#      and the installed tools write the digits data, train the digits config
#      for 2 iterations and test the checkpoint.
# Usage: tools/check_install.sh
# Environment: CHECK_DIR (default: a new folder under /tmp; the environment,
#   the wheel and the run go there), PYTHON (default: python3), MAX_JOBS.
# mmcv 2.1.0 is published as source only: pip takes the wheel it built for
# tools/setup_env.sh from its cache (same torch), or builds it (10-40 min).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
START=$(date +%s)
WORK=${CHECK_DIR:-$(mktemp -d /tmp/dsnet_mm-check.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
case "$WORK/" in
    "$REPO"/*) echo "CHECK_DIR must be outside the checkout" >&2; exit 1 ;;
esac
VENV=$WORK/venv
say() { echo "[check] $*"; }

# 1. the stack, in a fresh environment
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
PY=$VENV/bin/python
PIP="$PY -m pip"
say "installing the stack into $VENV"
# '===' selects the standard registry build of torch, not a local +cpu one
$PIP install -q "torch===2.13.0" torchvision==0.28.0 "setuptools>=77,<81" \
    wheel ninja numpy
MAX_JOBS=${MAX_JOBS:-2} $PIP install -q --no-build-isolation mmcv==2.1.0
$PIP install -q mmengine==0.10.7 mmpretrain==1.2.0 mmdet==3.3.0

# 2. the wheel, built from a copy of the checkout's files (git's view: no
#    data, environments or build leftovers), then installed
SRC=$WORK/src
rm -rf "$SRC" "$WORK/dist"
mkdir -p "$SRC"
(cd "$REPO" && git ls-files -co --exclude-standard -z \
    | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$SRC"
(cd "$SRC" && "$PY" -c "from setuptools import build_meta as b; b.build_wheel('$WORK/dist')" \
    > "$WORK/build.log" 2>&1) || { tail -30 "$WORK/build.log" >&2; exit 1; }
WHEEL=$(ls "$WORK"/dist/dsnet_mm-*.whl)
say "built $(basename "$WHEEL")"
$PIP freeze > "$WORK/freeze-before.txt"
$PIP install -q "$WHEEL"
$PIP freeze > "$WORK/freeze-after.txt"
"$PY" - "$WORK/freeze-before.txt" "$WORK/freeze-after.txt" <<'PYEOF'
import sys
before, after = ({line.strip() for line in open(p) if line.strip()}
                 for p in sys.argv[1:])
def name(line):
    return line.split('==')[0].split(' @ ')[0].lower().replace('_', '-')
changed = sorted(before - after)
added = sorted(after - before)
if changed:
    print('[check] FAIL: pip install of the wheel changed or removed:',
          *changed, 'now:', *[a for a in added
                              if name(a) in {name(c) for c in changed}],
          sep='\n  ')
    sys.exit(1)
print(f'[check] pip freeze: all {len(before)} packages of the stack kept '
      f'their versions; added: {", ".join(added)}')
PYEOF

# 3. outside the checkout
RUN=$WORK/run
rm -rf "$RUN"
mkdir -p "$RUN"
cd "$RUN"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cat > my_digits.py <<'EOF'
_base_ = ['dsnet_mm::ds_mbnet_digits.py']
train_cfg = dict(max_epochs=1)
EOF
"$PY" - "$VENV" <<'PYEOF'
import os.path as osp
import sys

import dsnet_mm
from mmengine.config import Config

venv = osp.realpath(sys.argv[1])
assert osp.realpath(dsnet_mm.__file__).startswith(venv), dsnet_mm.__file__
cfg = Config.fromfile('dsnet_mm::ds_mbnet_imagenet.py')
assert osp.realpath(cfg.filename).startswith(venv), cfg.filename
assert cfg.model.type == 'DSImageClassifier' and cfg.default_scope == 'mmpretrain'
mine = Config.fromfile('my_digits.py')
assert mine.train_cfg.max_epochs == 1 and mine.model.type == 'DSImageClassifier'
det = Config.fromfile('dsnet_mm::det/ssd_ds-mbnet_digits_voc.py')
assert det.default_scope == 'mmdet'
print(f'[check] dsnet_mm {dsnet_mm.__version__} from {osp.dirname(dsnet_mm.__file__)}')
print(f"[check] Config.fromfile('dsnet_mm::ds_mbnet_imagenet.py') -> {cfg.filename}")
print("[check] _base_ = ['dsnet_mm::ds_mbnet_digits.py'] in my_digits.py: loaded")
PYEOF
DSNET=$VENV/bin/dsnet
"$DSNET" write_digits --out "$RUN/data" > write_digits.log
DATA=()
for k in train_dataloader val_dataloader test_dataloader; do
    DATA+=("$k.dataset.data_root=$RUN/data/digits/cifar")
done
SMALL=(train_cfg.max_epochs=1 train_cfg.val_interval=1
       train_dataloader.dataset.indices=128 val_dataloader.dataset.indices=64
       test_dataloader.dataset.indices=64 val_cfg.calibrate.num_batches=1
       test_cfg.calibrate.num_batches=1 default_hooks.checkpoint.interval=1
       default_hooks.logger.interval=1)
"$DSNET" train dsnet_mm::ds_mbnet_digits.py --work-dir work \
    --cfg-options "${SMALL[@]}" "${DATA[@]}" > train.log 2>&1 \
    || { tail -40 train.log >&2; exit 1; }
grep -Eq 'Epoch\(train\) +\[ *1\]\[ *2/2\]' train.log \
    || { echo "[check] FAIL: no second training iteration in train.log" >&2; exit 1; }
[ -f work/epoch_1.pth ] || { echo "[check] FAIL: no checkpoint" >&2; exit 1; }
say "dsnet train dsnet_mm::ds_mbnet_digits.py: 2 iterations, work/epoch_1.pth"
"$DSNET" test dsnet_mm::ds_mbnet_digits.py work/epoch_1.pth --work-dir test \
    --out metrics.json --cfg-options "${SMALL[@]}" "${DATA[@]}" > test.log 2>&1 \
    || { tail -40 test.log >&2; exit 1; }
"$PY" - <<'PYEOF'
import json
metrics = json.load(open('metrics.json'))
top1 = {k: v for k, v in metrics.items() if k.endswith('accuracy/top1')}
assert {f'subnet_{k}/accuracy/top1' for k in range(14)} <= set(top1), metrics
print(f'[check] dsnet test: top-1 of {len(top1)} sub-networks in '
      'metrics.json')
PYEOF
say "passed in $(( $(date +%s) - START )) s (folder: $WORK)"

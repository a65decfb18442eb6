# The demo scripts' common start, sourced by each (tools/run_*demo.sh): the
# repository root as working directory, the idempotent set-up, a pinned
# OpenMP thread count (oversubscribed threads slow down badly on small
# machines), the venv's python as PY and SEED (default 0). Each script then
# sets its own WORK_DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PY=.venv/bin/python
SEED=${SEED:-0}

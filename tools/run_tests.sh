#!/usr/bin/env bash
# Set up everything a fresh machine needs (idempotent), then run the tests:
# two pytest workers (pytest-xdist) of one OpenMP thread each, one per core of
# the 2-core reference machine (more threads per worker oversubscribe it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" tests "$@"

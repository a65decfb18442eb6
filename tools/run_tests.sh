#!/usr/bin/env bash
# Set up everything a fresh machine needs (idempotent), then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec .venv/bin/python -m pytest tests "$@"

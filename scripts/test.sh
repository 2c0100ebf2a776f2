#!/usr/bin/env bash
# The test suite: set up, then run every test on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-test.txt
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest -q tests "$@"

#!/usr/bin/env bash
# The test suite: set up, then run every test on the CPU, in one worker
# process per CPU up to 4 (pytest-xdist; most of a test's time is XLA
# compiling, which uses one core). Arguments go to pytest: -n 0 runs the
# tests in this process, one after another.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-test.txt
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest -q -n logical --maxprocesses=4 tests "$@"

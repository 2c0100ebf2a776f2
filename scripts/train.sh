#!/usr/bin/env bash
# The main job: set up, then train the paper's final model and evaluate it.
# Extra arguments go to main.py, e.g. --config.data_dir=../shared/data
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements.txt
exec .venv/bin/python main.py --config=configs/final.py --workdir=runs/final "$@"

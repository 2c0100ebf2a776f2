#!/usr/bin/env bash
# Creates .venv (once) and installs the requirements into it. With an NVIDIA
# GPU (nvidia-smi works) the main job's requirements also get JAX's CUDA build.
# Usage: bash scripts/setup.sh [requirements file]
# Python: $PYTHON, else the first of python3, python3.13, python3.12 and
# python3.11 that is 3.11 or later (jax needs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
req=${1:-requirements.txt}
recent() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  >/dev/null 2>&1; }
# A .venv of an older Python, or one whose creation stopped midway (no pip,
# e.g. without Debian's python3-venv), is made again.
if ! { recent .venv/bin/python && .venv/bin/python -m pip --version \
       >/dev/null 2>&1; }; then
  py=${PYTHON:-}
  if [ -z "$py" ]; then
    for candidate in python3 python3.13 python3.12 python3.11; do
      if recent "$candidate"; then py=$candidate; break; fi
    done
  fi
  if [ -z "$py" ] || ! recent "$py"; then
    echo "error: need Python 3.11 or later; set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  rm -rf .venv
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
extra=()
if [ "$req" = requirements.txt ] && command -v nvidia-smi >/dev/null 2>&1 &&
   nvidia-smi -L >/dev/null 2>&1; then
  extra=("jax[cuda12]>=0.10.2")
fi
# ${extra[@]+...}: an empty array is an unbound variable under set -u in bash
# before 4.4.
.venv/bin/python -m pip install -q -r "$req" ${extra[@]+"${extra[@]}"}

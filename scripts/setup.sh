#!/usr/bin/env bash
# Creates .venv (once) and installs the requirements into it. With an NVIDIA
# GPU (nvidia-smi works) it also installs JAX's CUDA build.
# Usage: bash scripts/setup.sh [requirements file]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
req=${1:-requirements.txt}
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extra=()
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  extra=("jax[cuda12]>=0.10.2")
fi
.venv/bin/python -m pip install -q -r "$req" "${extra[@]}"

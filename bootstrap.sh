#!/usr/bin/env bash
# Set up .venv with torch and this project: `bash bootstrap.sh [EXTRAS]` (EXTRAS e.g. "dev,onnx").
# TORCH_SPEC picks the torch build: the default is the CPU wheel these machines carry; with a GPU use e.g.
#   TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124" bash bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
extras=${1:-onnx}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned, so no dependency's looser range pulls a CUDA build
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q $torch_spec
.venv/bin/python -m pip install -q -e ".[${extras}]"

#!/usr/bin/env bash
# The main job end to end on the embedded dataset (kept for older instructions): the same as
#   .venv/bin/nas run --config experiments/configs/quickstart.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/nas run --config experiments/configs/quickstart.yaml "$@"

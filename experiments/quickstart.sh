#!/usr/bin/env bash
# The main job end to end on the embedded dataset, with the quick-start config.
set -euo pipefail
cd "$(dirname "$0")/.."
nas=.venv/bin/nas
cfg=experiments/configs/quickstart.yaml
"$nas" data generate --config "$cfg"
"$nas" data preview --config "$cfg" --out runs/quickstart/data_preview.png
echo "results: runs/quickstart/"

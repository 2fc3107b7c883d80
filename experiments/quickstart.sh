#!/usr/bin/env bash
# The main job end to end on the embedded dataset: search -> teacher -> retrain with distillation -> export.
# Every step is resumable: running the script again continues (or just re-reports) what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
nas=.venv/bin/nas
cfg=experiments/configs/quickstart.yaml
run=runs/quickstart
resume() { [ -f "$1" ] && echo --resume || true; }

"$nas" data generate --config "$cfg"
"$nas" latency build --config "$cfg"
"$nas" search --config "$cfg" $(resume "$run/search.ckpt")
"$nas" train --config "$cfg" --model teacher --epochs 4 $(resume "$run/teacher/train.ckpt")
"$nas" train --config "$cfg" --arch "$run/student.arch.json" --teacher "$run/teacher/model.pt" --kd pixel \
  $(resume "$run/student/train.ckpt")
"$nas" export --config "$cfg" --checkpoint "$run/student/model.pt"
echo "results: $run/ (student.arch.json, student/model.pt, student/export/, metrics.csv per stage)"

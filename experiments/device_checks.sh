#!/usr/bin/env bash
# Checks that need the lent GPU machine (run through the device tool; CI never runs this script):
#   cpu2        the CPU validation of the latency issue (torch eager, 2 threads pinned to two physical cores,
#               256x512) on a machine no other tenant is using
#   cuda_fp32   latency table on CUDA (torch eager, float32, 256x512) and its validation against 30 networks
#   smoke       the pipeline on CUDA on tiny shapes: data -> search -> teacher -> student with pixel KD and
#               mixed precision -> export (TorchScript, ONNX, JSON, each compared with eager)
#   cuda_fp16   latency table on CUDA in float16 and its validation
#   cuda_1024   latency table on CUDA (float32) at FasterSeg's 1024x2048, where the GPU is no longer launch-bound
#   cuda_tests  the test suite's CUDA-only tests
# Each stage has its own time limit, so a slow one leaves the others their time; everything lands in
# $OUT/summary.txt and $OUT/results.tgz (tables, validation CSVs and plots, logs), re-packed after each stage.
#   usage: OUT=/tmp/out bash experiments/device_checks.sh [STAGE ...]   (default: cpu2 cuda_fp32 smoke cuda_fp16)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/device_out}
py=${PYTHON:-python3}
work=runs/device
mkdir -p "$OUT" "$work"
summary="$OUT/summary.txt"
tables="latency.cache_dir=$work/tables"

say() { echo "$*" | tee -a "$summary"; }
pack() {  # models and checkpoints stay behind: only what a report needs travels back
  tar czf "$OUT/results.tgz" --exclude="*.ckpt" --exclude="*.pt" --exclude="*.ts" --exclude="*.onnx" -C runs device \
    2>/dev/null || true
}
stage() {  # stage NAME LIMIT_S COMMAND...: run with a time limit, log to $work/NAME.log, report its tail
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  timeout "$limit" "$@" >"$work/$name.log" 2>&1
  rc=$?
  say "[$name] rc=$rc, $((SECONDS - t0)) s: $*"
  grep -v '^\s*$' "$work/$name.log" | tail -n 4 | cut -c1-400 | sed 's/^/    /' | tee -a "$summary"
  pack
  return $rc
}

two_cores() {  # two logical CPUs on distinct physical cores, away from CPU 0 (interrupts)
  lscpu -p=CPU,CORE 2>/dev/null | grep -v '^#' | sort -t, -k2,2n -k1,1n | awk -F, '
    !seen[$2]++ && $1 != 0 { cpus[n++] = $1 } END { if (n >= 2) print cpus[0] "," cpus[1]; else print "0,1" }'
}

pin=()  # a command prefix for the latency stages (cpu2 pins them to two cores)
table() {  # table NAME BUILD_S VALIDATE_S DEVICE [--set K=V ...]: build a latency table, then validate it
  local name=$1 build_s=$2 validate_s=$3 dev=$4
  shift 4
  stage "${name}_build" "$build_s" "${pin[@]}" $py -m nas latency build --device "$dev" --set "$tables" "$@" &&
    stage "${name}_validate" "$validate_s" "${pin[@]}" $py -m nas latency validate --device "$dev" --set "$tables" \
      "$@" --out "$work/$name"
}

cuda_fp32() { table cuda_fp32 150 120 cuda; }
cuda_fp16() { table cuda_fp16 120 100 cuda --set latency.dtype=float16; }
cuda_1024() { table cuda_1024 150 100 cuda --set "latency.input_hw=[1024,2048]"; }

cuda_tests() {
  stage cuda_tests 60 $py -m pytest -q -p no:cacheprovider -k cuda tests/latency tests/search_spaces/test_supernet.py
}

cpu2() {
  local pin=()
  if command -v taskset >/dev/null; then pin=(taskset -c "$(two_cores)"); fi
  say "cpu2: ${pin[*]:-not pinned (no taskset)}"
  table cpu2 300 270 cpu
}

smoke() {  # SMOKE_DEVICE=cpu tries the stage on a machine without a GPU
  local cfg=experiments/configs/cuda_smoke.yaml run=$work/smoke dev=${SMOKE_DEVICE:-cuda}
  stage smoke_data 60 $py -m nas data generate --config "$cfg" &&
    stage smoke_search 120 $py -m nas search --config "$cfg" --device "$dev" &&
    stage smoke_teacher 90 $py -m nas train --config "$cfg" --device "$dev" --model teacher &&
    stage smoke_student 90 $py -m nas train --config "$cfg" --device "$dev" --arch "$run/student.arch.json" \
      --teacher "$run/teacher/model.pt" --kd pixel &&
    stage smoke_export 90 $py -m nas export --config "$cfg" --device "$dev" --checkpoint "$run/student/model.pt"
}

say "== device checks $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>&1 | tee -a "$summary"
$py -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| cudnn', torch.backends.cudnn.version())" 2>&1 | tee -a "$summary"
say "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) logical CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
for s in "${@:-cpu2 cuda_fp32 smoke cuda_fp16}"; do
  for name in $s; do "$name" || say "($name stopped early)"; done
done
say "== done $(date -u +%FT%TZ)"
pack

#!/usr/bin/env bash
# One GPU check of issues 12 and 19, under 8 minutes: train the reference preset at 256x256 through the bundle (200
# steps of stage 1 at batch 3, then 40 of stage 2), time its reference scoring and 12 steps at the authors' global
# batch 24; then benchmarks/speed_check.py with bf16 and channels_last: images/s, TFLOP/s, MFU against the device's
# dense bf16 peak, peak memory and the largest batch (estimated) per preset and stage, and scoring images/s for
# inference.json and reference_scoring.json; then one stage-1 measurement of the reference preset at batch 24 with
# activation checkpointing. Every part has its own `timeout`, so one hang cannot eat the budget.
#
#   PYTHON=python3 bash benchmarks/gpu_check.sh                      # on the GPU machine, from the repository root
#   GPU_CHECK_TINY=1 OUT=/tmp/check bash benchmarks/gpu_check.sh     # the same script on a CPU, tiny settings
#   GPU_CHECK_LIMITS="110 35 30 150 60" ...                       # seconds for the five parts, to fit a lease
#
# Needs monai, pytorch-ignite, pydicom, nibabel and fire importable by $PYTHON (installs nothing). Writes
# $OUT (default benchmarks/results/<UTC time>)/reference_preset.json, speed_check.json, speed_check_batch24.json and
# gpu_check.log; the phantoms and checkpoints (about 15 GB) go to a scratch folder outside $OUT ($GPU_CHECK_WORK,
# default a new temporary folder), removed at the end.
set -u
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$(dirname "$0")/results/$(date -u +%Y%m%dT%H%M%SZ)}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
TINY=${GPU_CHECK_TINY:-0}
WORK=${GPU_CHECK_WORK:-$(mktemp -d)}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

if [ "$TINY" = 1 ]; then
  FLAGS=(--tiny); LIMITS=(120 60 60 300 120)
  SPEED=(--device cpu --presets demo --stages 1 --batch 2 --seconds 2 --warmup 1 --score-batch 2 --score-evaluations 1)
  BATCH24=(--device cpu --presets demo --stages 1 --batch 4 --seconds 2 --warmup 1 --checkpointing)
else
  FLAGS=(); read -r -a LIMITS <<< "${GPU_CHECK_LIMITS:-140 45 45 150 60}"
  SPEED=(--device cuda --amp on --channels-last --seconds 8 --warmup 5 --score)
  BATCH24=(--device cuda --amp on --channels-last --presets reference --stages 1 --batch 24 --seconds 8 --warmup 3
    --checkpointing)
fi
echo "gpu_check: $(date -u +%FT%TZ), tiny=$TINY, output $OUT"
timeout 20 "$PYTHON" -c "
import torch, monai
print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu (no CUDA)')
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'monai', monai.__version__)
" || echo "gpu_check: cannot import torch/monai with $PYTHON"

status=0
run_part() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  local started=$SECONDS
  timeout --kill-after=5 "$limit" "$@"
  local code=$?
  echo "gpu_check: $name finished with exit code $code after $((SECONDS - started)) s (limit $limit s)"
  [ $code -eq 0 ] || status=1
}
PRESET=(benchmarks/reference_preset.py --output "$OUT/reference_preset.json" --root "$WORK/bundle" "${FLAGS[@]}")
run_part "reference training" "${LIMITS[0]}" "$PYTHON" "${PRESET[0]}" train "${PRESET[@]:1}"
run_part "reference scoring" "${LIMITS[1]}" "$PYTHON" "${PRESET[0]}" score "${PRESET[@]:1}"
run_part "global batch" "${LIMITS[2]}" "$PYTHON" "${PRESET[0]}" batch "${PRESET[@]:1}"
run_part "speed check" "${LIMITS[3]}" "$PYTHON" benchmarks/speed_check.py "${SPEED[@]}" --output "$OUT/speed_check.json"
run_part "batch 24, activation checkpointing" "${LIMITS[4]}" "$PYTHON" benchmarks/speed_check.py "${BATCH24[@]}" \
  --output "$OUT/speed_check_batch24.json"
[ -n "${GPU_CHECK_WORK:-}" ] || rm -rf "$WORK"
echo "gpu_check: done in $SECONDS s, exit status $status; results in $OUT"
exit $status

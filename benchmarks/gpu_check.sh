#!/usr/bin/env bash
# One short check of the GPU backends on a machine with an NVIDIA GPU; prints every figure.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default gpu_check_out/; SKIP_INSTALL=1 to skip pip)
#
# Steps, each under its own time limit and all within BUDGET (460 s: the script ends within 8
# minutes); a step that runs out of time says so and the next one goes on; the profiles, the
# calibration and the search resume when the script is run again:
#   1. install the GPU extras (requirements-gpu.txt: onnxruntime-gpu replaces onnxruntime, tensorrt)
#   2. hwnas backends: which backends run here, and why not
#   3. profile fbnet at its own input size (224) on tensorrt fp16 and on ort-trt (--quick: 2 short rounds)
#   4. calibrate the tensorrt table on 4 architectures, validate on 4 held-out ones (2 rounds)
#   5. build and time a TensorRT engine of the demo's result (demo_out/, else a short search on the
#      tensorrt table), against the table's prediction (export --lut)
#   6. torch-cuda per-op timing (profile fbnet on torch-cuda, fp16)
# Not run in CI (no GPU there); `bash -n` checks its syntax and tests/test_gpu_check.py its flags.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check_out}
PY=${PY:-.venv/bin/python}
HWNAS="$PY -m hwnas"
mkdir -p "$OUT"
START=$SECONDS

BUDGET=${BUDGET:-460}  # seconds for the whole script: under 8 minutes with the table listings

step() {  # step LIMIT_S TITLE COMMAND...: run with a time limit (cut to what is left of BUDGET)
  local limit=$1 title=$2
  shift 2
  local left=$((BUDGET - (SECONDS - START)))
  [ "$limit" -gt "$left" ] && limit=$left
  echo
  if [ "$limit" -lt 10 ]; then
    echo "== $title: skipped, the ${BUDGET}s budget is spent (rerun the script to resume)"
    return 0
  fi
  echo "== $title (limit ${limit}s)"
  local t0=$SECONDS
  timeout --signal=INT "$limit" "$@"
  local rc=$?
  local took=$((SECONDS - t0))
  if [ "$rc" -eq 124 ]; then
    echo "-- $title: ran out of its ${limit}s (rerun the script to resume where it stopped)"
  elif [ "$rc" -ne 0 ]; then
    echo "-- $title: failed (exit $rc) after ${took}s"
  else
    echo "-- $title: ${took}s"
  fi
  return 0
}

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  # onnxruntime-gpu replaces the CPU wheel: remove that one first (requirements-gpu.txt says why)
  step 90 "install GPU extras" bash -c "$PY -m pip uninstall -y -q onnxruntime && $PY -m pip install -q -r requirements-gpu.txt"
fi
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE')"
step 20 "backends" $HWNAS backends

TRT=$OUT/fbnet_tensorrt_fp16.json
ORTTRT=$OUT/fbnet_ort_trt.json
TORCH=$OUT/fbnet_torch_cuda_fp16.json
resume() { [ -f "$1" ] && echo --resume; }

step 90 "profile fbnet on tensorrt fp16" $HWNAS profile --space fbnet --backend tensorrt --precision fp16 \
  --num-classes 10 --out "$TRT" --quick --no-progress $(resume "$TRT")
step 60 "profile fbnet on ort-trt" $HWNAS profile --space fbnet --backend ort-trt --num-classes 10 \
  --out "$ORTTRT" --quick --no-progress $(resume "$ORTTRT")
[ -f "$TRT" ] && $HWNAS lut show "$TRT" --top 5
[ -f "$ORTTRT" ] && $HWNAS lut show "$ORTTRT" --top 5

step 45 "calibrate the tensorrt table (4 architectures)" $HWNAS calibrate --lut "$TRT" --num-classes 10 \
  --samples 4 --rounds 2 --resume
step 45 "validate on held-out architectures (2 uniform + 2 lopsided)" $HWNAS validate --lut "$TRT" --num-classes 10 \
  --samples 2 --lopsided 2 --rounds 2 --out "$OUT/validate" --force

ARCH=demo_out/search/arch.json
WEIGHTS=(--weights demo_out/train/model.pt)
if [ ! -f "$ARCH" ] || [ ! -f demo_out/train/model.pt ]; then
  echo "no demo result in demo_out/ (make demo): a short search on the tensorrt table stands in"
  step 40 "short search on the tensorrt table" $HWNAS search --strategy evolution --space fbnet --lut "$TRT" \
    --latency-budget 40% --data digits --epochs 1 --max-batches 3 --trials 2 --out "$OUT/search" \
    $( [ -d "$OUT/search" ] && echo --resume )
  ARCH=$OUT/search/arch.json
  WEIGHTS=()
fi
step 45 "TensorRT fp16 engine of $ARCH, timed against its prediction" $HWNAS export "$ARCH" "${WEIGHTS[@]}" \
  --resolution 224 --onnx "$OUT/result.onnx" --tensorrt "$OUT/result.engine" --fp16 --lut "$TRT" --force
[ -f "$OUT/result.engine" ] && step 15 "deploy/benchmark.py of the engine" $PY deploy/benchmark.py "$OUT/result.engine" \
  --batch 1 --iters 50

step 30 "torch-cuda per-op timing (fp16)" $HWNAS profile --space fbnet --backend torch-cuda --precision fp16 \
  --num-classes 10 --out "$TORCH" --quick --no-progress $(resume "$TORCH")
[ -f "$TORCH" ] && $HWNAS lut show "$TORCH" --top 5

echo
echo "gpu_check done in $((SECONDS - START))s; tables and reports in $OUT/"

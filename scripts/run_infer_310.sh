#!/bin/bash
# The Ascend 310 inference flow: build the C++ program, cut the audio into the model's windows, run the model,
# score the trials. (scripts/run_infer_cpu.sh runs the same flow with the Python runner instead of the program.)
#
#   bash scripts/run_infer_310.sh MINDIR DATA_PATH TRIALS [DEVICE_ID] [--key value ...]
#
#   MINDIR     exported model (export.py), with its contract MINDIR.json beside it
#   DATA_PATH  audio root the trial list's paths are relative to (e.g. VoxCeleb1 wav/)
#   TRIALS     trial list (VoxCeleb or Kaldi format)
#   DEVICE_ID  Ascend device id (default: $DEVICE_ID, else 0)
#   --key value  config overrides for preprocess.py / postprocess.py (e.g. --infer_max_windows 1)
#
# Writes $INFER_DIR (default: <MINDIR folder>/infer): input/, output/, result.json and acc.log (EER, minDCF).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
BACKEND="${INFER_BACKEND:-ascend}"          # ascend: ascend310_infer program; cpu: src/infer_runner.py

usage() {
  sed -n '5,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

fail() {
  echo "$(basename "$0"): $1" >&2
  usage
}

[ $# -ge 3 ] || fail "expected at least 3 arguments (MINDIR DATA_PATH TRIALS), got $#"
MINDIR="$1"; DATA_PATH="$2"; TRIALS="$3"; shift 3
DEVICE="${DEVICE_ID:-0}"
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then
  DEVICE="$1"
  shift
fi
[ -f "$MINDIR" ] || fail "MINDIR '$MINDIR' is not a file"
[ -f "$MINDIR.json" ] || fail "no export contract '$MINDIR.json' beside the model (export.py writes it)"
[ -d "$DATA_PATH" ] || fail "DATA_PATH '$DATA_PATH' is not a folder"
[ -f "$TRIALS" ] || fail "TRIALS '$TRIALS' is not a file"
[[ "$DEVICE" =~ ^[0-9]+$ ]] || fail "DEVICE_ID must be a non-negative integer, got '$DEVICE'"
[ "$BACKEND" = ascend ] || [ "$BACKEND" = cpu ] || fail "INFER_BACKEND must be ascend or cpu, got '$BACKEND'"

MINDIR="$(cd "$(dirname "$MINDIR")" && pwd)/$(basename "$MINDIR")"
INFER_DIR="${INFER_DIR:-$(dirname "$MINDIR")/infer}"
mkdir -p "$INFER_DIR"
cd "$ROOT"
common=(--infer_model "$MINDIR" --test_dir "$DATA_PATH" --trials "[$TRIALS]" --infer_dir "$INFER_DIR")

echo "== preprocess: windows of $DATA_PATH -> $INFER_DIR/input"
"$PYTHON" preprocess.py "${common[@]}" "$@"

if [ "$BACKEND" = ascend ]; then
  echo "== build ascend310_infer"
  bash ascend310_infer/build.sh
  echo "== infer on Ascend device $DEVICE"
  ascend310_infer/build/ecapa_infer --model "$MINDIR" --input_dir "$INFER_DIR/input" \
    --output_dir "$INFER_DIR/output" --device_id "$DEVICE"
else
  echo "== infer on CPU (src/infer_runner.py)"
  "$PYTHON" -m src.infer_runner --model "$MINDIR" --input_dir "$INFER_DIR/input" \
    --output_dir "$INFER_DIR/output" --device_target CPU
fi

echo "== postprocess: scores and metrics -> $INFER_DIR/acc.log"
"$PYTHON" postprocess.py "${common[@]}" "$@" | tee "$INFER_DIR/acc.log"

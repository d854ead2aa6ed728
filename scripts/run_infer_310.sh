#!/bin/bash
# The Ascend 310 inference flow: build the C++ program, cut the audio into the model's windows, run the model,
# score the trials. (scripts/run_infer_cpu.sh runs the same flow with the Python runner instead of the program.)
#
#   bash scripts/run_infer_310.sh MINDIR DATA_PATH [DEVICE_ID] --trials TRIALS [--key value ...]
#
#   MINDIR      exported model (export.py), with its contract MINDIR.json beside it
#   DATA_PATH   audio root the trial list's paths are relative to (e.g. VoxCeleb1 wav/)
#   DEVICE_ID   Ascend device id, a non-negative integer (default: $DEVICE_ID, else 0)
#   --trials    trial list(s), VoxCeleb or Kaldi format: a path or '[a.txt, b.txt]' (or the trials of --config)
#   --key value other config overrides for preprocess.py / postprocess.py (e.g. --infer_max_windows 1)
#
# Writes $INFER_DIR (default: <MINDIR folder>/infer): input/, output/, result.json and acc.log (EER, minDCF).
# INFER_PROGRAM=path/to/ecapa_infer uses a program built before instead of running ascend310_infer/build.sh.
# Python steps run in the project's environment (scripts/env.sh: $ECAPA_VENV, default .venv).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/env.sh"   # ROOT, use_venv
BACKEND="${INFER_BACKEND:-ascend}"          # ascend: ascend310_infer program; cpu: src/deploy/ascend310_cpu_twin.py

usage() {
  sed -n '5,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

fail() {
  echo "$(basename "$0"): $1" >&2
  usage
}

[ $# -ge 2 ] || fail "expected at least 2 arguments (MINDIR DATA_PATH), got $#"
MINDIR="$1"; DATA_PATH="$2"; shift 2
DEVICE="${DEVICE_ID:-0}"
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then
  DEVICE="$1"
  shift
fi
[ -f "$MINDIR" ] || fail "MINDIR '$MINDIR' is not a file"
[ -f "$MINDIR.json" ] || fail "no export contract '$MINDIR.json' beside the model (export.py writes it)"
[ -d "$DATA_PATH" ] || fail "DATA_PATH '$DATA_PATH' is not a folder"
[[ "$DEVICE" =~ ^[0-9]+$ ]] || fail "DEVICE_ID must be a non-negative integer, got '$DEVICE'"
[ "$BACKEND" = ascend ] || [ "$BACKEND" = cpu ] || fail "INFER_BACKEND must be ascend or cpu, got '$BACKEND'"
has_trials=0
for arg in "$@"; do
  case "$arg" in --trials|--trials=*|--config|--config=*) has_trials=1 ;; esac
done
[ "$has_trials" = 1 ] || fail "no trial list: pass --trials TRIALS (or a --config whose trials are set)"

MINDIR="$(cd "$(dirname "$MINDIR")" && pwd)/$(basename "$MINDIR")"
INFER_DIR="${INFER_DIR:-$(dirname "$MINDIR")/infer}"
mkdir -p "$INFER_DIR"
cd "$ROOT"
use_venv
common=(--infer_model "$MINDIR" --test_dir "$DATA_PATH" --infer_dir "$INFER_DIR")
flags=(--model "$MINDIR" --input_dir "$INFER_DIR/input" --output_dir "$INFER_DIR/output" --device_id "$DEVICE")

echo "== preprocess: windows of $DATA_PATH -> $INFER_DIR/input"
python preprocess.py "${common[@]}" "$@"

if [ "$BACKEND" = ascend ]; then
  PROGRAM="${INFER_PROGRAM:-}"
  if [ -z "$PROGRAM" ]; then
    echo "== build ascend310_infer"
    bash ascend310_infer/build.sh
    PROGRAM=ascend310_infer/build/ecapa_infer
  fi
  echo "== infer on Ascend device $DEVICE ($PROGRAM)"
  "$PROGRAM" "${flags[@]}"
else
  echo "== infer on CPU (src/deploy/ascend310_cpu_twin.py; DEVICE_ID $DEVICE is not used)"
  python -m src.deploy.ascend310_cpu_twin "${flags[@]}" --device_target CPU
fi

echo "== postprocess: scores and metrics -> $INFER_DIR/acc.log"
python postprocess.py "${common[@]}" "$@" | tee "$INFER_DIR/acc.log"

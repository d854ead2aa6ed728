#!/usr/bin/env bash
# Train on one Ascend device:  bash scripts/run_standalone_train_ascend.sh DEVICE_ID [--key value ...]
# e.g.  bash scripts/run_standalone_train_ascend.sh 0 --output_dir runs/vox2 --resume latest
# Relative paths are taken from the folder you run this in. Runs the project's environment (scripts/env.sh).
# run_standalone_train_gpu.sh runs this script with DEVICE_TARGET=GPU.
set -euo pipefail
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: bash $0 DEVICE_ID [--key value ...]" >&2
  exit 1
fi
export DEVICE_ID=$1
shift
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"   # ROOT, use_venv
use_venv
exec python "$ROOT/train.py" --device_target "${DEVICE_TARGET:-Ascend}" --device_id "$DEVICE_ID" "$@"

#!/usr/bin/env bash
# Train on one Ascend device:  bash scripts/run_standalone_train_ascend.sh DEVICE_ID [--key value ...]
# e.g.  bash scripts/run_standalone_train_ascend.sh 0 --output_dir runs/vox2 --resume latest
# Relative paths are taken from the folder you run this in. Uses .venv/bin/python when it exists.
# run_standalone_train_gpu.sh runs this script with DEVICE_TARGET=GPU.
set -euo pipefail
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: bash $0 DEVICE_ID [--key value ...]" >&2
  exit 1
fi
export DEVICE_ID=$1
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$ROOT/.venv/bin/python" ] && export PATH="$ROOT/.venv/bin:$PATH"
exec python "$ROOT/train.py" --device_target "${DEVICE_TARGET:-Ascend}" --device_id "$DEVICE_ID" "$@"

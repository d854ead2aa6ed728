#!/usr/bin/env bash
# Evaluate a checkpoint on one Ascend device:  bash scripts/run_eval_ascend.sh DEVICE_ID CHECKPOINT [--key value ...]
# e.g.  bash scripts/run_eval_ascend.sh 0 runs/vox2/checkpoints/ckpt_step00100000.ckpt --test_dir /data/vox1/wav \
#         --trials "[veri_test2.txt, list_test_all2.txt, list_test_hard2.txt]" --score_norm asnorm --cohort_source /data/vox2/dev/aac
# Relative paths are taken from the folder you run this in. Runs the project's environment (scripts/env.sh).
# run_eval_gpu.sh runs this script with DEVICE_TARGET=GPU.
set -euo pipefail
if [ $# -lt 2 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: bash $0 DEVICE_ID CHECKPOINT [--key value ...]" >&2
  exit 1
fi
export DEVICE_ID=$1
CHECKPOINT=$2
shift 2
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"   # ROOT, use_venv
use_venv
exec python "$ROOT/eval.py" --device_target "${DEVICE_TARGET:-Ascend}" --device_id "$DEVICE_ID" --checkpoint "$CHECKPOINT" "$@"

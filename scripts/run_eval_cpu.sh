#!/usr/bin/env bash
# Evaluate a checkpoint on the CPU:  bash scripts/run_eval_cpu.sh CHECKPOINT [--key value ...]
# e.g.  bash scripts/run_eval_cpu.sh demo_out/run/checkpoints/ckpt_step00000200.ckpt --config configs/demo_config.yaml
# Relative paths are taken from the folder you run this in. Runs the project's environment (scripts/env.sh).
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash $0 CHECKPOINT [--key value ...]" >&2
  exit 1
fi
CHECKPOINT=$1
shift
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"   # ROOT, use_venv
use_venv
exec python "$ROOT/eval.py" --device_target CPU --checkpoint "$CHECKPOINT" "$@"

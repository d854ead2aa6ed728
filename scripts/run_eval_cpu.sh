#!/usr/bin/env bash
# Evaluate a checkpoint on the CPU:  bash scripts/run_eval_cpu.sh CHECKPOINT [--key value ...]
# e.g.  bash scripts/run_eval_cpu.sh demo_out/run/checkpoints/ckpt_step00000200.ckpt --config configs/demo_config.yaml
# Relative paths are taken from the folder you run this in. Uses .venv/bin/python when it exists.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: bash $0 CHECKPOINT [--key value ...]" >&2
  exit 1
fi
CHECKPOINT=$1
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$ROOT/.venv/bin/python" ] && export PATH="$ROOT/.venv/bin:$PATH"
exec python "$ROOT/eval.py" --device_target CPU --checkpoint "$CHECKPOINT" "$@"

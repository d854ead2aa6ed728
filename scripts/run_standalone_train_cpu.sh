#!/usr/bin/env bash
# Train on the CPU:  bash scripts/run_standalone_train_cpu.sh [--key value ...]
# e.g.  bash scripts/run_standalone_train_cpu.sh --config configs/demo_config.yaml --resume latest
# Relative paths are taken from the folder you run this in. Uses .venv/bin/python when it exists.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$ROOT/.venv/bin/python" ] && export PATH="$ROOT/.venv/bin:$PATH"
exec python "$ROOT/train.py" --device_target CPU "$@"

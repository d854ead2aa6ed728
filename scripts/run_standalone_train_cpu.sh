#!/usr/bin/env bash
# Train on the CPU:  bash scripts/run_standalone_train_cpu.sh [--key value ...]
# e.g.  bash scripts/run_standalone_train_cpu.sh --config configs/demo_config.yaml --resume latest
# Relative paths are taken from the folder you run this in. Runs the project's environment (scripts/env.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"   # ROOT, use_venv
use_venv
exec python "$ROOT/train.py" --device_target CPU "$@"

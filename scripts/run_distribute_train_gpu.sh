#!/usr/bin/env bash
# Data-parallel training on this machine with msrun (GPU, one process per rank):
#   bash scripts/run_distribute_train_gpu.sh RANK_SIZE [--key value ...]
# MASTER_PORT (default 8118) is the scheduler's TCP port on 127.0.0.1. msrun writes one log per rank,
# OUTPUT_DIR/distribute/worker_<rank>.log; only rank 0 writes checkpoints and summaries into output_dir.
# Relative paths are taken from the folder you run this in.
set -euo pipefail
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: bash $0 RANK_SIZE [--key value ...]" >&2
  exit 1
fi
RANK_SIZE=$1
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# msrun starts every worker with the first python on PATH: it must be the one with MindSpore.
[ -x "$ROOT/.venv/bin/python" ] && export PATH="$ROOT/.venv/bin:$PATH"
OUTPUT_DIR=$(PYTHONPATH="$ROOT" python -c 'import os, sys; from src.config import load_config
print(os.path.abspath(load_config(sys.argv[1:]).output_dir))' "$@")
LOG_DIR=${LOG_DIR:-$OUTPUT_DIR/distribute}
mkdir -p "$LOG_DIR"
echo "$RANK_SIZE ranks on GPU; logs in $LOG_DIR"
exec msrun --worker_num="$RANK_SIZE" --local_worker_num="$RANK_SIZE" --master_addr=127.0.0.1 \
  --master_port="${MASTER_PORT:-8118}" --join=True --log_dir="$LOG_DIR" \
  "$ROOT/train.py" --device_target GPU --distributed true "$@"

#!/usr/bin/env bash
# Data-parallel training with msrun, one process per rank (MindSpore's own collectives, no MPI). Called by
# run_distribute_train_gpu.sh and run_distribute_train_cpu.sh with DEVICE_TARGET set (GPU or CPU):
#   DEVICE_TARGET=GPU bash scripts/msrun_train.sh LOCAL_RANKS [--key value ...]
# One server: LOCAL_RANKS processes on this machine, scheduler on 127.0.0.1:MASTER_PORT (default 8118).
# Several servers: run the same command on every server with
#   WORKER_NUM   ranks of all servers together (default: LOCAL_RANKS)
#   MASTER_ADDR  IP of the server that runs the scheduler (the one with NODE_RANK 0; default 127.0.0.1)
#   NODE_RANK    this server's index, 0 .. servers - 1 (ranks NODE_RANK * LOCAL_RANKS ... on this server)
# e.g. two servers with 8 each:  WORKER_NUM=16 MASTER_ADDR=10.0.0.1 NODE_RANK=1 bash $0 8 --config ...
# output_dir (and train_list_dir) should then be on storage all servers share. msrun writes one log per rank,
# OUTPUT_DIR/distribute/worker_<rank>.log (LOG_DIR overrides); only rank 0 writes checkpoints and summaries.
# MindSpore's own warnings go to runs/mindspore_log/rank_<rank>/logs/ (src/mindspore_log.py; ECAPA_MINDSPORE_LOG).
# Relative paths are taken from the folder you run this in.
set -euo pipefail
: "${DEVICE_TARGET:?set DEVICE_TARGET to GPU or CPU}"
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: [WORKER_NUM=N MASTER_ADDR=IP NODE_RANK=K] bash $0 LOCAL_RANKS [--key value ...]" >&2
  exit 1
fi
LOCAL_RANKS=$1
shift
WORKER_NUM=${WORKER_NUM:-$LOCAL_RANKS}
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"   # ROOT, use_venv
use_venv   # msrun starts every worker with the first python on PATH: it must be the one with MindSpore
# msrun itself imports MindSpore: give it the log settings every entry point gives itself (src/mindspore_log.py).
eval "$(PYTHONPATH="$ROOT" python -c 'from src.mindspore_log import shell_exports; print(shell_exports())')"
OUTPUT_DIR=$(PYTHONPATH="$ROOT" python -m src.train.launch output_dir "$@" | tail -n 1)
LOG_DIR=${LOG_DIR:-$OUTPUT_DIR/distribute}
mkdir -p "$LOG_DIR"
NODE_ARGS=()
[ -n "${NODE_RANK:-}" ] && NODE_ARGS=(--node_rank="$NODE_RANK")
echo "$LOCAL_RANKS of $WORKER_NUM ranks on $DEVICE_TARGET here (scheduler ${MASTER_ADDR:-127.0.0.1}:${MASTER_PORT:-8118}); logs in $LOG_DIR"
exec msrun --worker_num="$WORKER_NUM" --local_worker_num="$LOCAL_RANKS" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="${MASTER_PORT:-8118}" "${NODE_ARGS[@]}" --join=True --log_dir="$LOG_DIR" \
  "$ROOT/train.py" --device_target "$DEVICE_TARGET" --distributed true "$@"

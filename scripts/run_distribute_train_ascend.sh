#!/usr/bin/env bash
# Data-parallel training on the Ascend devices of this server listed in an HCCL rank table (version 1.0):
#   bash scripts/run_distribute_train_ascend.sh RANK_TABLE_FILE [--key value ...]
# Write a rank table with  python -m src.train.rank_table write --out hccl.json --device_ids 0,1,2,3
# (device IPs from /etc/hccn.conf) and check one with  python -m src.train.rank_table check hccl.json
# The device count and ids come from the table. Several servers: write a table on each, join them with
#   python -m src.train.rank_table merge --out hccl_job.json server_a.json server_b.json
# and run this script with the joined table on every server; each starts the ranks of the server whose
# server_id is one of its addresses (or SERVER_ID=IP). RANK_SIZE is the job's total. output_dir should then
# be on storage the servers share (rank 0 writes checkpoints there; the others read the training list).
# Each rank runs in its own working folder
# RUN_DIR/rank_<id> (RUN_DIR defaults to OUTPUT_DIR/distribute) and logs to train.log there; only rank 0 writes
# checkpoints and summaries into output_dir. Relative paths are taken from the folder you run this in.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -f "$1" ]; then
  echo "usage: bash $0 RANK_TABLE_FILE [--key value ...]   (rank table not found: ${1:-none})" >&2
  exit 1
fi
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"   # ROOT, use_venv
use_venv
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
RANK_TABLE_FILE=$(realpath "$1")
shift

LISTING=$(python -m src.train.rank_table devices "$RANK_TABLE_FILE")   # "RANK_SIZE n", then "rank_id device_id" lines
RANK_SIZE=$(echo "$LISTING" | head -n 1 | cut -d' ' -f2)
# One recipe for every rank, with relative paths made absolute (the ranks run in their own folders).
FROZEN=$(mktemp /tmp/ecapa_train_config.XXXXXX.yaml)
OUTPUT_DIR=$(python -m src.train.launch freeze_config "$FROZEN" "$@" | tail -n 1)
RUN_DIR=${RUN_DIR:-$OUTPUT_DIR/distribute}
mkdir -p "$RUN_DIR"
cp "$FROZEN" "$RUN_DIR/launch_config.yaml" && rm -f "$FROZEN"
export RANK_TABLE_FILE RANK_SIZE
echo "rank table $RANK_TABLE_FILE: $RANK_SIZE ranks; working folders and logs under $RUN_DIR"

PIDS=()
while read -r RANK_ID DEVICE_ID; do
  WORK="$RUN_DIR/rank_$RANK_ID"
  mkdir -p "$WORK"
  (
    cd "$WORK"
    export RANK_ID DEVICE_ID
    env > env.log
    exec python "$ROOT/train.py" --config "$RUN_DIR/launch_config.yaml" --device_target Ascend \
      --device_id "$DEVICE_ID" --distributed true > train.log 2>&1
  ) &
  PIDS+=($!)
  echo "  rank $RANK_ID on device $DEVICE_ID: pid $!, log $WORK/train.log"
done < <(echo "$LISTING" | tail -n +2)

STATUS=0
for PID in "${PIDS[@]}"; do
  wait "$PID" || STATUS=1
done
[ $STATUS -eq 0 ] && echo "all ranks finished" || echo "some ranks failed: see the train.log files under $RUN_DIR" >&2
exit $STATUS

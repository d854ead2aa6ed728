#!/usr/bin/env bash
# Data-parallel training on this server's GPUs with msrun (several servers: WORKER_NUM, MASTER_ADDR, NODE_RANK;
# see scripts/msrun_train.sh):
#   bash scripts/run_distribute_train_gpu.sh LOCAL_RANKS [--key value ...]
DEVICE_TARGET=GPU exec bash "$(dirname "${BASH_SOURCE[0]}")/msrun_train.sh" "$@"

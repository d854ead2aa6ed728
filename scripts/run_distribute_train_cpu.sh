#!/usr/bin/env bash
# Data-parallel training on the CPU with msrun, one process per rank (MindSpore's MCCL collectives over TCP;
# several machines: WORKER_NUM, MASTER_ADDR, NODE_RANK; see scripts/msrun_train.sh):
#   bash scripts/run_distribute_train_cpu.sh LOCAL_RANKS [--key value ...]
DEVICE_TARGET=CPU exec bash "$(dirname "${BASH_SOURCE[0]}")/msrun_train.sh" "$@"

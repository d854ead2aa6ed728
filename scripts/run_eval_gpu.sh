#!/usr/bin/env bash
# Evaluate a checkpoint on one GPU:  bash scripts/run_eval_gpu.sh DEVICE_ID CHECKPOINT [--key value ...]
# The Ascend wrapper does the work: it takes DEVICE_TARGET from the environment (default Ascend), so one script
# serves both devices; arguments as scripts/run_eval_ascend.sh.
DEVICE_TARGET=GPU exec bash "$(dirname "${BASH_SOURCE[0]}")/run_eval_ascend.sh" "$@"

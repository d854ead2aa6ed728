#!/usr/bin/env bash
# Train on one GPU:  bash scripts/run_standalone_train_gpu.sh DEVICE_ID [--key value ...]
# e.g.  bash scripts/run_standalone_train_gpu.sh 0 --output_dir runs/vox2 --resume latest
DEVICE_TARGET=GPU exec bash "$(dirname "${BASH_SOURCE[0]}")/run_standalone_train_ascend.sh" "$@"

#!/usr/bin/env bash
# Train on one GPU:  bash scripts/run_standalone_train_gpu.sh DEVICE_ID [--key value ...]
# e.g.  bash scripts/run_standalone_train_gpu.sh 0 --output_dir runs/vox2 --resume latest
# The Ascend wrapper does the work: it takes DEVICE_TARGET from the environment (default Ascend), so one script
# serves both devices.
DEVICE_TARGET=GPU exec bash "$(dirname "${BASH_SOURCE[0]}")/run_standalone_train_ascend.sh" "$@"

#!/bin/bash
# The 310 inference flow on CPU: preprocess -> src/infer_runner.py (same file contract as ascend310_infer)
# -> postprocess. Same arguments as scripts/run_infer_310.sh (DEVICE_ID is accepted and unused):
#
#   bash scripts/run_infer_cpu.sh MINDIR DATA_PATH TRIALS [DEVICE_ID] [--key value ...]
INFER_BACKEND=cpu exec bash "$(dirname "${BASH_SOURCE[0]}")/run_infer_310.sh" "$@"

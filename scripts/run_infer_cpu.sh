#!/bin/bash
# The 310 inference flow on CPU: preprocess -> src/deploy/ascend310_cpu_twin.py (same file contract as ascend310_infer)
# -> postprocess. Same arguments as scripts/run_infer_310.sh (DEVICE_ID is checked and not used):
#
#   bash scripts/run_infer_cpu.sh MINDIR DATA_PATH [DEVICE_ID] --trials TRIALS [--key value ...]
INFER_BACKEND=cpu exec bash "$(dirname "${BASH_SOURCE[0]}")/run_infer_310.sh" "$@"

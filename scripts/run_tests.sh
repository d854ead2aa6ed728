#!/usr/bin/env bash
# Install what the tests need (virtual environment in .venv, or $ECAPA_VENV) and run the test suite.
# Extra arguments go to pytest, e.g.  bash scripts/run_tests.sh -k features -x
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
ensure_venv test
python -m pytest tests "$@"

#!/usr/bin/env bash
# Install what the tests need (virtual environment in .venv, or $ECAPA_VENV) and run the test suite.
# Extra arguments go to pytest, e.g.  bash scripts/run_tests.sh -k features -x
# Test files run in ECAPA_TEST_WORKERS parallel processes (pytest-xdist, default 2; each file stays in one process,
# so its module fixtures are built once); ECAPA_TEST_WORKERS=0 runs everything in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
ensure_venv test
python -m pytest tests -n "${ECAPA_TEST_WORKERS:-2}" --dist loadfile "$@"

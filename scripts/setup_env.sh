#!/usr/bin/env bash
# Sourced by run_demo.sh and run_tests.sh: create (or reuse) the virtual environment and install
# what the requirements files list. Set ECAPA_VENV to use another folder.
#   ensure_venv          runtime requirements
#   ensure_venv test     runtime + test-only requirements (torch CPU, speechbrain, onnxruntime, ...)
SPEECHBRAIN_VERSION=1.1.2

ensure_venv() {
  local want=${1:-runtime}
  VENV=${ECAPA_VENV:-.venv}
  if [ ! -x "$VENV/bin/python" ]; then
    local py
    py=$(command -v python3.11 || command -v python3.10 || command -v python3.12 || command -v python3.9 || command -v python3)
    echo "[setup] creating virtual environment $VENV with $py"
    "$py" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
  fi
  export PATH="$PWD/$VENV/bin:$PATH"   # msrun starts workers with the first python on PATH
  local files="requirements.txt"
  [ "$want" = test ] && files="requirements.txt requirements-test.txt"
  local stamp="$VENV/.installed-$want"
  local digest
  digest=$(cat $files scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
    return 0
  fi
  echo "[setup] installing $files into $VENV (MindSpore is a large download the first time)"
  # One resolve over all files, so numpy<2 (MindSpore) and torch==2.13.0 (the local CPU wheel) bind every
  # package; installing the files one after another let a test dependency upgrade numpy to 2.x.
  local args=()
  for f in $files; do args+=(-r "$f"); done
  pip install -q "${args[@]}"
  if [ "$want" = test ]; then
    pip install -q --no-deps "speechbrain==$SPEECHBRAIN_VERSION"
  fi
  python -c "import mindspore, numpy; assert numpy.__version__ < '2', numpy.__version__" \
    || { echo "[setup] MindSpore or NumPy failed to import in $VENV" >&2; return 1; }
  echo "$digest" > "$stamp"
}

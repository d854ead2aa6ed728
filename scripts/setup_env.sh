#!/usr/bin/env bash
# Sourced by run_demo.sh and run_tests.sh: create (or reuse) the virtual environment (scripts/env.sh: $ECAPA_VENV,
# default .venv), install what the requirements files list and put the environment first on PATH.
#   ensure_venv          runtime requirements
#   ensure_venv test     runtime + test-only requirements (torch CPU, speechbrain, wespeaker-nuaazs, speakerlab, ...)
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
SPEECHBRAIN_VERSION=1.1.2
WESPEAKER_VERSION=0.0.5       # wespeaker-nuaazs: PyPI copy of WeSpeaker's code (tests/test_import_wespeaker.py)
SPEAKERLAB_VERSION=0.0.6      # speakerlab: 3D-Speaker's code (tests/test_import_3dspeaker.py)
SILERO_VAD_VERSION=6.2.3      # silero-vad: carries silero_vad.onnx, the model of --vad silero (src/recordings/vad.py)
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ensure_venv() {
  local want=${1:-runtime}
  VENV=$(venv_dir)
  if [ ! -x "$VENV/bin/python" ]; then
    local py
    py=$(command -v python3.11 || command -v python3.10 || command -v python3.12 || command -v python3.9 || command -v python3)
    echo "[setup] creating virtual environment $VENV with $py"
    "$py" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
  fi
  use_venv
  local files="requirements.txt"
  [ "$want" = test ] && files="requirements.txt requirements-test.txt"
  local stamp="$VENV/.installed-$want"
  local digest
  digest=$(cat $files scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
    return 0
  fi
  echo "[setup] installing $files into $VENV (MindSpore is a large download the first time)"
  # One resolve over all files, so numpy<2 (MindSpore) and torch==2.13.0 (its CPU build) bind every package;
  # installing the files one after another let a test dependency upgrade numpy to 2.x.
  local args=()
  for f in $files; do args+=(-r "$f"); done
  if [ "$want" = test ]; then
    local torch_index
    torch_index=$(torch_cpu_source)
    if [ -n "$torch_index" ]; then args+=("$torch_index"); fi
  fi
  pip install -q "${args[@]}"
  # --no-deps: the package declares torch; the VAD needs only its model file, run by onnxruntime
  pip install -q --no-deps "silero-vad==$SILERO_VAD_VERSION"
  if [ "$want" = test ]; then
    # --no-deps: they declare torchaudio (and more), whose builds want another torch; the model modules the tests
    # use import torch only
    pip install -q --no-deps "speechbrain==$SPEECHBRAIN_VERSION" "wespeaker-nuaazs==$WESPEAKER_VERSION" \
      "speakerlab==$SPEAKERLAB_VERSION"
  fi
  python -c "import mindspore, numpy; assert numpy.__version__ < '2', numpy.__version__" \
    || { echo "[setup] MindSpore or NumPy failed to import in $VENV" >&2; return 1; }
  echo "$digest" > "$stamp"
}

# Where the pinned torch comes from: a plain `pip install torch` on Linux takes PyPI's CUDA build (several GB).
# A CPU wheel pip already finds without any index (its find-links, e.g. a local wheel folder) is used as it is;
# otherwise this prints the pip option that adds PyTorch's CPU index, whose 2.13.0+cpu outranks PyPI's 2.13.0.
torch_cpu_source() {
  local version
  version=$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' requirements-test.txt)
  if pip install -q --dry-run --no-deps --no-index --ignore-installed "torch==$version+cpu" >/dev/null 2>&1; then
    echo "[setup] torch $version: CPU wheel found through pip's find-links" >&2
  else
    echo "[setup] torch $version: CPU build from $TORCH_CPU_INDEX" >&2
    echo "--extra-index-url=$TORCH_CPU_INDEX"
  fi
}

#!/usr/bin/env bash
# Sourced by every script: the repository root and the project's Python environment.
#   ROOT        the repository root (absolute)
#   venv_dir    prints the virtual environment's folder: $ECAPA_VENV (absolute, or relative to ROOT), default .venv
#   use_venv    puts that environment's bin first on PATH, so `python` (and msrun, which starts its workers with the
#               first python on PATH) is the project's; without one, a note and the python already on PATH
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

venv_dir() {
  local venv=${ECAPA_VENV:-.venv}
  [ "${venv#/}" = "$venv" ] && venv="$ROOT/$venv"
  if [ -d "$venv" ]; then (cd "$venv" && pwd); else echo "$venv"; fi   # cd: without ../ in what PATH shows
}

use_venv() {
  local venv
  venv=$(venv_dir)
  if [ -x "$venv/bin/python" ]; then
    export PATH="$venv/bin:$PATH"
  else
    echo "[env] no virtual environment at $venv (ECAPA_VENV; bash scripts/run_demo.sh makes one):" \
      "using $(command -v python || echo 'python, which is not on PATH')" >&2
  fi
}

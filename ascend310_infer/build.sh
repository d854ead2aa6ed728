#!/bin/bash
# Build the Ascend 310 inference program (ecapa_infer) and its native test (infer_io_test) into build/
# (or $BUILD_DIR).
#
#   bash build.sh                 build against the MindSpore C++ API found as below
#   bash build.sh --fetch-api     first download the MindSpore 2.0.0 wheel (cp39) (947 MB) and unpack its
#                                 include/api and lib/ (for checking the build off-device; that library cannot run a
#                                 model without an NPU), both kept in a cache folder outside the checkout that every
#                                 clone reuses: $DEPS_DIR, default ${XDG_CACHE_HOME:-~/.cache}/ecapa-tdnn
#   bash build.sh --test-only     build only the non-device library and its native test (no MindSpore needed)
#
# Where the API is looked for, first hit wins:
#   1. $MINDSPORE_PATH (a folder with include/api/model.h and lib/libmindspore.so or lib/libmindspore-lite.so);
#   2. the mindspore package of $PYTHON (default python3), when it ships include/api (Ascend/GPU wheels do,
#      MindSpore 2.10's CPU wheel does not);
#   3. the mindspore_lite package of $PYTHON (its runtime/ folder);
#   4. $DEPS_DIR/mindspore-2.0.0/mindspore (written by --fetch-api).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
PYTHON="${PYTHON:-python3}"
DEPS_DIR="${DEPS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ecapa-tdnn}"
FETCHED_API="$DEPS_DIR/mindspore-2.0.0/mindspore"
BUILD_DIR="${BUILD_DIR:-$HERE/build}"

usage() {
  sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# Download the MindSpore 2.0.0 wheel without installing it and unpack only the C++ API parts. Both land in a
# temporary folder beside their place and are renamed into it when complete, so builds running at the same time
# (several clones share the cache) never see half a wheel or half an API.
fetch_api() {
  if [ -f "$FETCHED_API/include/mindapi/base/format.h" ] && [ -f "$FETCHED_API/lib/libmindspore.so" ]; then
    echo "MindSpore C++ API already unpacked in $FETCHED_API"
    return 0
  fi
  mkdir -p "$DEPS_DIR/wheel"
  local wheel tmp
  wheel="$(ls "$DEPS_DIR"/wheel/mindspore-2.0.0-*.whl 2>/dev/null | head -n 1 || true)"
  if [ -z "$wheel" ]; then
    echo "downloading mindspore==2.0.0 (this host's platform, cp39) into $DEPS_DIR/wheel ..."
    tmp="$(mktemp -d "$DEPS_DIR/wheel/.download.XXXXXX")"
    "$PYTHON" -m pip download --no-deps --python-version 39 \
      --only-binary=:all: mindspore==2.0.0 -d "$tmp" || { rm -rf "$tmp"; return 3; }
    wheel="$DEPS_DIR/wheel/$(basename "$(ls "$tmp"/mindspore-2.0.0-*.whl | head -n 1)")"
    mv -f "$tmp"/mindspore-2.0.0-*.whl "$wheel"
    rm -rf "$tmp"
  fi
  echo "unpacking include/ and lib/*.so* from $wheel"
  tmp="$(mktemp -d "$DEPS_DIR/.unpack.XXXXXX")"
  "$PYTHON" - "$wheel" "$tmp" <<'PY' || { rm -rf "$tmp"; return 1; }
import re, sys, zipfile
wheel, dest = sys.argv[1:]
keep = re.compile(r"^mindspore/(include/.*|lib/[^/]+\.so[.0-9]*)$")
with zipfile.ZipFile(wheel) as z:
    z.extractall(dest, [n for n in z.namelist() if keep.match(n)])
PY
  rm -rf "$DEPS_DIR/mindspore-2.0.0.old"
  [ -e "$DEPS_DIR/mindspore-2.0.0" ] && mv "$DEPS_DIR/mindspore-2.0.0" "$DEPS_DIR/mindspore-2.0.0.old"
  mv "$tmp" "$DEPS_DIR/mindspore-2.0.0"
  rm -rf "$DEPS_DIR/mindspore-2.0.0.old"
}

# Print the folder holding include/api and lib/ of the first MindSpore C++ API found, or nothing.
find_api() {
  if [ -n "${MINDSPORE_PATH:-}" ]; then
    echo "$MINDSPORE_PATH"
    return 0
  fi
  local dir
  dir="$("$PYTHON" -c 'import os, mindspore; print(os.path.dirname(mindspore.__file__))' 2>/dev/null || true)"
  if [ -n "$dir" ] && [ -f "$dir/include/api/model.h" ]; then
    echo "$dir"
    return 0
  fi
  dir="$("$PYTHON" -c 'import os, mindspore_lite; print(os.path.dirname(mindspore_lite.__file__))' 2>/dev/null || true)"
  if [ -n "$dir" ] && [ -f "$dir/include/api/model.h" ]; then
    echo "$dir"
    return 0
  fi
  if [ -f "$FETCHED_API/include/api/model.h" ]; then
    echo "$FETCHED_API"
  fi
}

main() {
  local fetch=0 test_only=0
  for arg in "$@"; do
    case "$arg" in
      --fetch-api) fetch=1 ;;
      --test-only) test_only=1 ;;
      -h|--help) usage; return 0 ;;
      *) echo "build.sh: unknown argument '$arg'" >&2; usage >&2; return 2 ;;
    esac
  done
  if [ "$fetch" = 1 ]; then
    fetch_api || { echo "build.sh: could not download mindspore==2.0.0 (no network?)" >&2; return 3; }
  fi
  local cmake_args=(-DCMAKE_BUILD_TYPE=Release)
  if [ "$test_only" = 1 ]; then
    cmake_args+=(-DECAPA_BUILD_INFER=OFF)
  else
    local api
    api="$(find_api)"
    if [ -z "$api" ]; then
      echo "build.sh: no MindSpore C++ API found: set MINDSPORE_PATH to a folder with include/api and lib/," \
           "install MindSpore's Ascend wheel, or run 'bash build.sh --fetch-api'" >&2
      return 4
    fi
    cmake_args+=(-DMINDSPORE_PATH="$api")
  fi
  cmake -S "$HERE" -B "$BUILD_DIR" "${cmake_args[@]}"
  cmake --build "$BUILD_DIR" -j "$(nproc)"
  echo "built: $(ls "$BUILD_DIR"/ecapa_infer "$BUILD_DIR"/infer_io_test 2>/dev/null | tr "\n" " ")"
}

main "$@"

#!/usr/bin/env bash
# Diarize and score VoxConverse (v0.3) dev and test:
#   bash scripts/run_voxconverse.sh ANNOTATIONS AUDIO CHECKPOINT OUT [--key value ...]
# ANNOTATIONS: a checkout of github.com/joonson/voxconverse (its dev/*.rttm and test/*.rttm, version 0.3 on master);
# AUDIO: the folder where voxconverse_dev_wav.zip and voxconverse_test_wav.zip were unpacked (dev: audio/*.wav,
# test: voxconverse_test_wav/*.wav; any depth is searched). A partition is scored when its RTTMs and every one of
# their WAV files are present, else it is skipped with a note. PARTITIONS="dev" limits the run.
# OUT/<partition>: RTTM, JSON and timeline per recording, scores.json (DER and JER, collars 0.25 s and 0 s, overlap
# scored and skipped), then the DER by number of speakers and by overlap. VoxConverse recordings have up to 21
# speakers: --max_speakers 21 is passed (a later --max_speakers wins). Extra --key value go to python -m src.diarize.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: bash $0 ANNOTATIONS AUDIO CHECKPOINT OUT [--key value ...]" >&2
  exit 1
fi
ANNOTATIONS=$1
AUDIO=$2
CHECKPOINT=$3
OUT=$4
shift 4
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"   # ROOT, use_venv
use_venv
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
find "$AUDIO" -name '*.wav' > "$OUT/all_wavs.txt"
for part in ${PARTITIONS:-dev test}; do
  if ! ls "$ANNOTATIONS/$part"/*.rttm >/dev/null 2>&1; then
    echo "[voxconverse] $part: no RTTM files in $ANNOTATIONS/$part; skipped" >&2
    continue
  fi
  : > "$OUT/$part.txt"
  missing=0
  for rttm in "$ANNOTATIONS/$part"/*.rttm; do
    name=$(basename "$rttm" .rttm)
    wav=$(grep -m1 "/$name\.wav$" "$OUT/all_wavs.txt" || true)
    if [ -z "$wav" ]; then missing=$((missing + 1)); else echo "$wav" >> "$OUT/$part.txt"; fi
  done
  if [ "$missing" -gt 0 ]; then
    echo "[voxconverse] $part: $missing recordings have no WAV file under $AUDIO; skipped" >&2
    continue
  fi
  python -m src.diarize --list "$OUT/$part.txt" --checkpoint "$CHECKPOINT" --out "$OUT/$part" \
    --reference "$ANNOTATIONS/$part" --max_speakers 21 --no_plot "$@"
  python -m src.diarize.breakdown --scores "$OUT/$part/scores.json" --reference "$ANNOTATIONS/$part"
done

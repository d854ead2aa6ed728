#!/usr/bin/env bash
# Diarize a set of generated conversations and print the DER by number of speakers and by overlap:
#   bash scripts/run_diarize_conversations.sh CHECKPOINT OUT [--key value ...]
# e.g.  bash scripts/run_diarize_conversations.sh demo_out/run/checkpoints/ckpt_step00000200.ckpt diar_conv \
#           --config configs/demo_config.yaml
# OUT/data: the conversations (src/data/conversations.py: 24 recordings, 2-8 speakers, 1-2 min, 0-20 % overlap,
# a third with background noise, a third reverberant; COUNT, MINUTES_MIN and MINUTES_MAX change the set);
# OUT/diarized: RTTM, JSON and timeline per recording, scores.json. A second run reuses both.
# Extra --key value arguments go to python -m src.diarize. Relative paths are taken from the folder you run this in.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash $0 CHECKPOINT OUT [--key value ...]" >&2
  exit 1
fi
CHECKPOINT=$1
OUT=$2
shift 2
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"   # ROOT, use_venv
use_venv
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
python -m src.data.conversations --out "$OUT/data" --count "${COUNT:-24}" --speakers 2 8 \
  --minutes "${MINUTES_MIN:-1}" "${MINUTES_MAX:-2}" --overlap 0 0.2 --noise_prob 0.33 --reverb_prob 0.33
python -m src.diarize --list "$OUT/data/recordings.txt" --checkpoint "$CHECKPOINT" --out "$OUT/diarized" \
  --reference "$OUT/data/rttm" "$@"
python -m src.diarize.breakdown --scores "$OUT/diarized/scores.json" --reference "$OUT/data/rttm"

#!/usr/bin/env bash
# End-to-end demo on a fresh machine, CPU only, a few minutes:
#   bash scripts/run_demo.sh [--key value ...]      (extra keys go to train.py and eval.py)
# 1. creates/updates the virtual environment (.venv, or $ECAPA_VENV; runtime requirements),
# 2. writes a synthetic speaker corpus (40 training speakers, 10 held-out speakers with a trial list,
#    MUSAN-like and RIR-like folders) into demo_out/corpus,
# 3. scores the held-out trials with the untrained network (the baseline: well above the trained EER, not 50 %,
#    because random filters already pick up the synthetic speakers' pitch),
# 4. trains configs/demo_config.yaml into demo_out/run,
# 5. scores the held-out trials with the trained network and prints both EERs and minDCFs,
# 6. measures score calibration on a second generated set with lengths of 1-12 s (demo_out/heldout): its 60
#    "train" speakers calibrate (python -m src.calibrate: score only, + duration QMF, + duration and norm QMF), its
#    40 unseen "test" speakers are scored raw, with AS-norm and calibrated; the table goes to
#    demo_out/calibration_table.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh
ensure_venv
CONFIG=configs/demo_config.yaml
OUT=demo_out

if [ ! -f "$OUT/corpus/trials.txt" ]; then
  python -m src.data.synthetic --out "$OUT/corpus" --train_speakers 40 --test_speakers 10 --utts 20 \
    --min_seconds 2 --max_seconds 4 --seed 0
fi

# The untrained network's checkpoint: same initialisation as training (seeded), no update.
python - "$CONFIG" "$OUT/untrained.ckpt" "$@" <<'PY'
import sys
from src.config import load_config            # src before mindspore: src/__init__.py routes MindSpore's log
import mindspore as ms
from src.device import setup_device
from src.model.ecapa_tdnn import build_ecapa
cfg = load_config(["--config", sys.argv[1]] + sys.argv[3:])
setup_device("CPU")
ms.set_seed(int(cfg.seed))
ms.save_checkpoint(build_ecapa(cfg), sys.argv[2])
PY
python eval.py --config "$CONFIG" --checkpoint "$OUT/untrained.ckpt" --eval_output_dir "$OUT/eval_untrained" "$@"

# --resume latest: a second run of the demo continues (or reuses) the first one instead of starting over.
python train.py --config "$CONFIG" --device_target CPU --resume latest "$@"
LAST=$(ls "$OUT"/run/checkpoints/ckpt_step*.ckpt | sort | tail -n 1)
python eval.py --config "$CONFIG" --checkpoint "$LAST" --eval_output_dir "$OUT/eval_trained" "$@"

python - "$OUT/eval_untrained/eval_summary.json" "$OUT/eval_trained/eval_summary.json" <<'PY'
import json, sys
print("\nheld-out synthetic speakers (cosine scoring)")
for label, path in zip(("untrained", "trained"), sys.argv[1:]):
    summary = json.load(open(path))
    for name, entry in summary["trial_lists"].items():
        m = entry["metrics"]["cosine"]
        dcf = {k: v for k, v in m.items() if k.startswith("min_dcf") and not k.endswith("threshold")}
        print(f"  {label:9s} {name}: EER {m['eer_percent']:.2f} %  " +
              "  ".join(f"{k} {v:.4f}" for k, v in sorted(dcf.items())))
PY

# ---- 6. calibration on utterances of 1-12 s; neither set of speakers was seen in training or calibration
if [ ! -f "$OUT/heldout/trials.txt" ]; then
  python -m src.data.synthetic --out "$OUT/heldout" --train_speakers 60 --test_speakers 40 --utts 12 \
    --min_seconds 1 --max_seconds 12 --seed 1 --no_augment_folders --trials_per_utt 30
fi
HELDOUT=(--config "$CONFIG" --checkpoint "$LAST" --bucket_seconds "[2, 4, 8]" --max_eval_seconds 12
         --test_dir "$OUT/heldout/test" --trials "$OUT/heldout/trials.txt")
for QUALITY in score_only:"[]" duration:"[duration]" duration_norm:"[duration, norm]"; do
  NAME=${QUALITY%%:*}
  python -m src.calibrate "${HELDOUT[@]}" --calibration_source "$OUT/heldout/train" \
    --calibration_utts_per_speaker 12 --calibration_quality "${QUALITY#*:}" --calibration "$OUT/calibration/$NAME.json" "$@"
  python eval.py "${HELDOUT[@]}" --calibration "$OUT/calibration/$NAME.json" --eval_output_dir "$OUT/eval_heldout/$NAME" \
    --embedding_cache "$OUT/eval_heldout/embeddings.npz" "$@"
done
python eval.py "${HELDOUT[@]}" --score_norm asnorm --asnorm_topk 20 --cohort_source "$OUT/run/lists/train_list.txt" \
  --eval_output_dir "$OUT/eval_heldout/asnorm" --embedding_cache "$OUT/eval_heldout/embeddings.npz" "$@"

python - "$OUT" <<'PY'
import json, os, sys
import numpy as np
from src.evaluate.metrics import summarize
from src.files import write_atomically
out = sys.argv[1]

def read_scores(path):           # scores_<list>.txt: enroll test score label
    rows = [line.split() for line in open(path)]
    return np.array([float(r[2]) for r in rows]), np.array([int(r[3]) for r in rows])

runs = {name: json.load(open(os.path.join(out, "eval_heldout", name, "eval_summary.json")))["trial_lists"]["trials"]
        for name in ("score_only", "duration", "duration_norm", "asnorm")}
table = {"raw cosine": summarize(*read_scores(runs["score_only"]["score_file"]), llr=True),
         "AS-norm (top 20 of the 40 training speakers)": summarize(*read_scores(runs["asnorm"]["score_file"]), llr=True),
         "calibrated, score only": runs["score_only"]["metrics"]["calibrated"],
         "calibrated + QMF duration": runs["duration"]["metrics"]["calibrated"],
         "calibrated + QMF duration, norm": runs["duration_norm"]["metrics"]["calibrated"]}
write_atomically(os.path.join(out, "calibration_table.json"), "w", lambda f: json.dump(table, f, indent=2))
print("\nheld-out speakers, 1-12 s (raw and AS-norm scores read as LLRs for Cllr and actDCF)")
print(f"  {'':34s} {'EER %':>6s} {'minDCF.01':>9s} {'actDCF.01':>9s} {'minDCF.05':>9s} {'actDCF.05':>9s} "
      f"{'Cllr':>6s} {'minCllr':>7s}")
for name, m in table.items():
    print(f"  {name[:34]:34s} {m['eer_percent']:6.2f} {m['min_dcf_p0.01']:9.4f} {m['act_dcf_p0.01']:9.4f} "
          f"{m['min_dcf_p0.05']:9.4f} {m['act_dcf_p0.05']:9.4f} {m['cllr']:6.3f} {m['min_cllr']:7.3f}")
PY

# ---- 7. recordings: one long generated recording with pauses and noise through the VAD (docs/recordings.md)
if [ ! -f "$OUT/recording/speech.json" ]; then
  python -m src.data.synthetic --layout recordings --out "$OUT/recording" --test_speakers 1 --utts 1 \
    --min_seconds 90 --max_seconds 90 --seed 3
fi
RECORDING=$(ls "$OUT"/recording/test/*/*/00001.wav | head -n 1)
python -m src.recordings.speech "$RECORDING" --config "$CONFIG" --truth "$OUT/recording/speech.json" \
  --rttm "$OUT/recording/speech.rttm" "$@"
# its speech (far longer than max_eval_seconds) embedded as the mean of 3 s windows
python -m src.evaluate.verify --embed "$RECORDING" --config "$CONFIG" --checkpoint "$LAST" --vad silero \
  --long_audio windows --out "$OUT/recording/embedding.npz" "$@"

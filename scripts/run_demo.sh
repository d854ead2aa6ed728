#!/usr/bin/env bash
# End-to-end demo on a fresh machine, CPU only, a few minutes:
#   bash scripts/run_demo.sh [--key value ...]      (extra keys go to train.py and eval.py)
# 1. creates/updates the virtual environment (.venv, or $ECAPA_VENV; runtime requirements),
# 2. writes a synthetic speaker corpus (40 training speakers, 10 held-out speakers with a trial list,
#    MUSAN-like and RIR-like folders) into demo_out/corpus,
# 3. scores the held-out trials with the untrained network (the baseline: well above the trained EER, not 50 %,
#    because random filters already pick up the synthetic speakers' pitch),
# 4. trains configs/demo_config.yaml into demo_out/run,
# 5. scores the held-out trials with the trained network and prints both EERs and minDCFs.
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

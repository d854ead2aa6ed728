"""EER of long recordings embedded as windows over their speech against cropped to their first max_eval_seconds,
with and without voice activity detection.

    python -m src.data.synthetic --layout recordings --out demo_out/long --test_speakers 12 --utts 3 \
        --min_seconds 150 --max_seconds 150 --seed 2
    python benchmarks/long_audio_eer.py --config configs/demo_config.yaml \
        --checkpoint demo_out/run/checkpoints/ckpt_step00000200.ckpt \
        --test_dir demo_out/long/test --trials demo_out/long/trials.txt --eval_output_dir demo_out/long/eval

Runs eval.py's evaluation once per setting (long_audio crop / windows x vad none / silero, every other key as
given, ``--max_eval_seconds 60 --bucket_seconds [3]`` unless given), prints EER and minDCF per setting and writes
them to <eval_output_dir>/long_audio_eer.json. The recordings of ``--layout recordings`` are minutes long, 30-50 %
pauses, noisy (5-20 dB SNR) and reverberant, with the speaker's voice spread over all of it.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import eval as eval_script                      # noqa: E402
from src.config import load_config             # noqa: E402
from src.files import write_atomically         # noqa: E402

SETTINGS = [("crop", "none"), ("crop", "silero"), ("windows", "none"), ("windows", "silero")]
DEFAULTS = ["--max_eval_seconds", "60", "--bucket_seconds", "[3]"]


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    base = load_config(DEFAULTS + argv)
    out_dir = base.eval_output_dir or os.path.join(base.output_dir, "eval")
    results = {}
    for long_audio, vad in SETTINGS:
        name = f"long_audio {long_audio}, vad {vad}"
        folder = os.path.join(out_dir, f"{long_audio}_{vad}")
        summary = eval_script.evaluate(load_config(DEFAULTS + argv + [
            "--long_audio", long_audio, "--vad", vad, "--eval_output_dir", folder]))
        metrics = next(iter(summary["trial_lists"].values()))["metrics"]["cosine"]
        results[name] = {key: metrics[key] for key in ("eer_percent", "min_dcf_p0.01", "min_dcf_p0.05",
                                                        "num_target", "num_nontarget")}
        results[name]["seconds"] = summary["seconds"]
    print(f"\n{'':30s} {'EER %':>6s} {'minDCF.01':>9s} {'minDCF.05':>9s} {'seconds':>8s}")
    for name, m in results.items():
        print(f"{name:30s} {m['eer_percent']:6.2f} {m['min_dcf_p0.01']:9.4f} {m['min_dcf_p0.05']:9.4f} "
              f"{m['seconds']:8.1f}")
    first = next(iter(results.values()))
    print(f"({first['num_target']} target, {first['num_nontarget']} nontarget trials, max_eval_seconds "
          f"{base.max_eval_seconds:g}, windows {base.window_seconds:g} s every {base.window_hop_seconds:g} s)")
    path = os.path.join(out_dir, "long_audio_eer.json")
    write_atomically(path, "w", lambda f: json.dump({"argv": argv, "results": results}, f, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

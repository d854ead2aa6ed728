"""Every command-line entry point ends on bad input the same way: one line naming the culprit on stderr, exit
status 1 (2 for a command line that cannot be parsed), no traceback."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cases(tmp):
    """(command, expected exit status, text the error line must contain)."""
    missing = os.path.join(tmp, "missing")
    return [
        (["train.py", "--config", missing + ".yaml"], 1, f"config file not found: {missing}.yaml"),
        (["train.py", "--channels", "wide"], 1, "--channels: expected a number, got 'wide'"),
        (["eval.py", "--chanels", "3"], 2, "--chanels: unknown config key"),
        (["eval.py", "--checkpoint", missing + ".ckpt", "--trials", missing + ".txt"], 1,
         f"{missing}.txt: trial list not found"),
        (["export.py", "--checkpoint", missing + ".ckpt"], 1, f"{missing}.ckpt: checkpoint file not found"),
        (["preprocess.py", "--infer_model", missing + ".mindir", "--trials", missing + ".txt"], 1,
         f"{missing}.mindir.json: export contract not found"),
        (["postprocess.py", "--infer_dir", missing], 1, "manifest not found"),
        (["-m", "src.evaluate.verify", "a.wav", "--checkpoint", missing + ".ckpt"], 2,
         "expected two audio files to compare, got 1"),
        (["-m", "src.data.check", "--seed", "abc"], 1, "--seed: expected a number, got 'abc'"),
        (["-m", "src.calibrate", "--checkpoint", missing + ".ckpt", "--calibration_source", missing,
          "--calibration", os.path.join(tmp, "cal.json")], 1, f"calibration_source: {missing} does not exist"),
        (["-m", "src.data.synthetic", "--out", tmp, "--train_speakers", "many"], 2,
         "argument --train_speakers: invalid int value: 'many'"),
        (["-m", "src.data.convert", "--src", missing, "--dst", os.path.join(tmp, "wav")], 1, missing),
        (["-m", "src.train.rank_table", "check", missing + ".json"], 1, f"{missing}.json"),
        (["-m", "src.train.launch", "freeze_config"], 2, "freeze_config needs the YAML file to write"),
        (["-m", "src.deploy.ascend310_cpu_twin", "--model", missing + ".mindir", "--input_dir", missing,
          "--output_dir", tmp], 1, f"--input_dir {missing}: not a folder"),
        (["-m", "src.recordings.speech", missing + ".wav"], 1, f"{missing}.wav: audio file not found"),
        (["-m", "src.import_weights", "--format", "mindspore_zoo", missing + ".ckpt", os.path.join(tmp, "o.ckpt")],
         1, f"{missing}.ckpt: checkpoint file not found"),
        (["-m", "src.speakers", "list", "--store", missing + ".db"], 1, f"{missing}.db: no speaker store here"),
        (["-m", "src.diarize", missing + ".wav", "--checkpoint", missing + ".ckpt", "--out", os.path.join(tmp, "d")],
         1, f"{missing}.ckpt: checkpoint file not found"),
    ]


COMMANDS = [" ".join(c[0][:2]) for c in cases("/tmp")]


@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=COMMANDS)
def test_bad_argument_ends_with_one_line_naming_it(index, tmp_path):
    command, status, text = cases(str(tmp_path))[index]
    done = subprocess.run([sys.executable] + command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == status, (command, done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    prefix = "usage error: " if status == 2 else "error: "
    errors = [line for line in done.stderr.splitlines() if line.startswith(("error: ", "usage error: "))]
    assert len(errors) == 1 and errors[0].startswith(prefix) and text in errors[0], (command, done.stderr[-2000:])

"""The environment every script runs in: ECAPA_VENV (absolute, or relative to the repository root) picks the
python of the wrappers and of scripts/setup_env.sh, and MindSpore's own log goes to a file unless
ECAPA_MINDSPORE_LOG=console. Real processes; the virtual environments are stand-ins whose python, pip and msrun
record how they were started."""
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts")

STAND_IN = """#!/bin/bash
# stand-in for a virtual environment's program: records how it was started
echo "$0 $*" >> "{record}"
# pip without a local CPU torch wheel: the probe of scripts/setup_env.sh (pip install --dry-run --no-index) fails
if [ "$(basename "$0")" = pip ] && [ -n "${{NO_LOCAL_TORCH:-}}" ] && [[ " $* " == *" --dry-run "* ]]; then exit 1; fi
"""


def make_venv(folder):
    """A folder with bin/python, bin/pip and bin/msrun that append their path and arguments to folder/record.txt."""
    os.makedirs(os.path.join(folder, "bin"))
    record = os.path.join(folder, "record.txt")
    for name in ("python", "pip", "msrun"):
        path = os.path.join(folder, "bin", name)
        with open(path, "w") as f:
            f.write(STAND_IN.format(record=record))
        os.chmod(path, 0o755)
    return record


def calls(record):
    with open(record) as f:
        return f.read().splitlines()


def run(command, cwd, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("ECAPA_VENV", "LOG_DIR", "INFER_DIR", "NO_LOCAL_TORCH")}
    environ.update(env)
    return subprocess.run(command, cwd=cwd, env=environ, capture_output=True, text=True, timeout=60)


@pytest.fixture(params=["absolute", "relative"])
def venv(request, tmp_path):
    """(ECAPA_VENV value, the stand-in's bin folder, its record file); the relative value is taken from the root."""
    folder = str(tmp_path / "stand-in venv")
    record = make_venv(folder)
    value = folder if request.param == "absolute" else os.path.relpath(folder, ROOT)
    return value, os.path.join(folder, "bin"), record


def test_train_and_eval_wrappers_run_the_ecapa_venv_python(venv, tmp_path):
    value, bin_dir, record = venv
    for script, args in (("run_standalone_train_cpu.sh", ["--config", "c.yaml"]),
                         ("run_standalone_train_gpu.sh", ["1", "--config", "c.yaml"]),
                         ("run_eval_cpu.sh", ["ckpt.ckpt"]),
                         ("run_eval_gpu.sh", ["0", "ckpt.ckpt"])):
        done = run(["bash", os.path.join(SCRIPTS, script)] + args, cwd=tmp_path, ECAPA_VENV=value)
        assert done.returncode == 0, script + done.stderr
        assert "[env]" not in done.stderr
    entry = os.path.join(bin_dir, "python")
    assert calls(record) == [
        f"{entry} {ROOT}/train.py --device_target CPU --config c.yaml",
        f"{entry} {ROOT}/train.py --device_target GPU --device_id 1 --config c.yaml",
        f"{entry} {ROOT}/eval.py --device_target CPU --checkpoint ckpt.ckpt",
        f"{entry} {ROOT}/eval.py --device_target GPU --device_id 0 --checkpoint ckpt.ckpt",
    ]


def test_infer_cpu_runs_every_python_step_in_the_ecapa_venv(venv, tmp_path):
    value, bin_dir, record = venv
    (tmp_path / "m.mindir").write_text("model")
    (tmp_path / "m.mindir.json").write_text("{}")
    (tmp_path / "audio").mkdir()
    done = run(["bash", os.path.join(SCRIPTS, "run_infer_cpu.sh"), str(tmp_path / "m.mindir"), str(tmp_path / "audio"),
                "--trials", "trials.txt"], cwd=tmp_path, ECAPA_VENV=value, PYTHON="/usr/bin/false")
    assert done.returncode == 0, done.stdout + done.stderr
    entry = os.path.join(bin_dir, "python") + " "
    steps = calls(record)
    assert len(steps) == 3 and all(step.startswith(entry) for step in steps)
    steps = [step[len(entry):].split() for step in steps]
    assert steps[0][0] == "preprocess.py"
    assert steps[1][:2] == ["-m", "src.deploy.ascend310_cpu_twin"]
    assert steps[2][0] == "postprocess.py"


def test_msrun_launch_uses_the_ecapa_venv_for_msrun_and_its_workers(venv, tmp_path):
    value, bin_dir, record = venv
    done = run(["bash", os.path.join(SCRIPTS, "run_distribute_train_cpu.sh"), "2", "--config", "c.yaml"],
               cwd=tmp_path, ECAPA_VENV=value, LOG_DIR=str(tmp_path / "logs"))
    assert done.returncode == 0, done.stdout + done.stderr
    launched = calls(record)[-1]
    assert launched.startswith(os.path.join(bin_dir, "msrun") + " --worker_num=2 ")
    assert launched.endswith(f"{ROOT}/train.py --device_target CPU --distributed true --config c.yaml")
    assert all(step.startswith(bin_dir) for step in calls(record))


def test_without_a_venv_the_wrappers_say_so_and_use_the_python_on_path(tmp_path):
    record = make_venv(str(tmp_path / "elsewhere"))
    path = os.path.join(str(tmp_path / "elsewhere"), "bin") + os.pathsep + os.environ["PATH"]
    done = run(["bash", os.path.join(SCRIPTS, "run_eval_cpu.sh"), "ckpt.ckpt"], cwd=tmp_path,
               ECAPA_VENV=str(tmp_path / "missing"), PATH=path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("\n") == 1 and f"[env] no virtual environment at {tmp_path / 'missing'}" in done.stderr
    assert calls(record) == [f"{tmp_path / 'elsewhere' / 'bin' / 'python'} {ROOT}/eval.py --device_target CPU "
                             "--checkpoint ckpt.ckpt"]


@pytest.mark.parametrize("local_wheel", [True, False])
def test_setup_installs_into_ecapa_venv_and_takes_torch_from_the_cpu_index_only_without_a_local_wheel(
        venv, local_wheel):
    value, bin_dir, record = venv
    env = {} if local_wheel else {"NO_LOCAL_TORCH": "1"}
    done = run(["bash", "-c", 'source scripts/setup_env.sh && ensure_venv test && command -v python'], cwd=ROOT,
               ECAPA_VENV=value, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == os.path.join(bin_dir, "python")
    pip = os.path.join(bin_dir, "pip")
    probe, install, silero, speechbrain = [step for step in calls(record) if step.startswith(pip)]
    assert "--dry-run --no-deps --no-index" in probe and "torch==2.13.0+cpu" in probe
    assert install.startswith(f"{pip} install -q -r requirements.txt -r requirements-test.txt")
    assert ("--extra-index-url=https://download.pytorch.org/whl/cpu" in install) is not local_wheel
    assert silero == f"{pip} install -q --no-deps silero-vad==6.2.3"     # run time: the VAD's model file
    assert "speechbrain==" in speechbrain
    assert os.path.isfile(os.path.join(os.path.dirname(bin_dir), ".installed-test"))


# A tiny Embedder in GRAPH mode: compiling it makes MindSpore 2.10 warn "Some side effect nodes were eliminated by
# mistake" (C++); loading a broken MindIR logs a C++ error, log.error a Python one. Started like every entry point:
# route_mindspore_log first.
EMBED = """
import os, sys
from src.mindspore_log import route_mindspore_log
route_mindspore_log()
import numpy as np, mindspore as ms
from mindspore import log
from src.device import setup_device
from src.model.ecapa_tdnn import ECAPA_TDNN
from src.model.embedder import Embedder
setup_device("CPU")
net = Embedder(ECAPA_TDNN(channels=16, mfa_channels=48, embedding_size=24, attention_channels=8, se_channels=8,
                          res2net_scale=2))
net.set_train(False)
wav = np.random.default_rng(0).standard_normal((2, 8000)).astype(np.float32) * 0.1
print(net(ms.Tensor(wav), ms.Tensor(np.array([8000, 6000], np.int32))).shape)
try:
    ms.load(sys.argv[1])
except RuntimeError:
    pass
log.error("python-side error")
print("pid", os.getpid())
print("environment of child processes:", os.popen("echo $GLOG_stderrthreshold").read().strip())
"""
WARNING = "Some side effect nodes were eliminated by mistake"
CPP_ERROR = "Load MindIR file failed"


def run_embedder(tmp_path, **env):
    (tmp_path / "broken.mindir").write_text("not a model")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_") and k != "ECAPA_MINDSPORE_LOG"}
    environ.update(env)
    done = subprocess.run([sys.executable, "-c", EMBED, str(tmp_path / "broken.mindir")], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def log_text(folder, pid):
    paths = glob.glob(os.path.join(folder, "rank_*", "logs", f"*.{pid}"))
    assert paths, f"no MindSpore log of process {pid} in {folder}"
    return "".join(open(path).read() for path in paths)


def test_mindspore_warnings_go_to_the_log_file_and_errors_to_the_console(tmp_path):
    done = run_embedder(tmp_path)
    assert WARNING not in done.stderr
    assert CPP_ERROR in done.stderr and "python-side error" in done.stderr
    pid = done.stdout.split("pid ")[1].split()[0]
    text = log_text(os.path.join(ROOT, "runs", "mindspore_log"), pid)
    assert WARNING in text and CPP_ERROR in text and "python-side error" in text
    # MindSpore's Python logger (in a child process) wants the threshold as a number again
    assert "environment of child processes: 3" in done.stdout


def test_ecapa_mindspore_log_names_the_folder_or_brings_the_console_back(tmp_path):
    folder = tmp_path / "ms log"
    done = run_embedder(tmp_path, ECAPA_MINDSPORE_LOG=str(folder))
    assert WARNING not in done.stderr and CPP_ERROR in done.stderr
    assert WARNING in log_text(str(folder), done.stdout.split("pid ")[1].split()[0])

    done = run_embedder(tmp_path, ECAPA_MINDSPORE_LOG="console")
    assert WARNING in done.stderr and CPP_ERROR in done.stderr and "python-side error" in done.stderr


IMPORT_ONLY = """
import json, os, sys
import src, src.cli, src.checkpoint, src.evaluate.verify, src.deploy.ascend310_cpu_twin
import train, eval, export, preprocess, postprocess
print(json.dumps({"glog": sorted(k for k in os.environ if k.startswith("GLOG_")),
                  "hooks": [type(hook).__name__ for hook in sys.meta_path]}))
"""


def test_importing_src_or_an_entry_point_changes_nothing():
    # The routing is start-up work of a command (src/mindspore_log.py), not a side effect of an import.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_") and k != "ECAPA_MINDSPORE_LOG"}
    done = subprocess.run([sys.executable, "-c", IMPORT_ONLY], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["glog"] == [] and "_ThresholdForCpp" not in seen["hooks"]

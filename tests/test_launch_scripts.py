"""scripts/run_distribute_train_ascend.sh without Ascend devices: train.py is replaced by a stub that records what
each rank was started with (arguments, HCCL environment, working folder)."""
import json
import os
import shutil
import subprocess
import sys

import yaml

from src.train.rank_table import make_rank_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STUB = '''import json, os, sys
with open("started.json", "w") as f:
    json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(),
               "env": {k: os.environ.get(k) for k in ("RANK_TABLE_FILE", "RANK_ID", "RANK_SIZE", "DEVICE_ID")}}, f)
print("stub rank", os.environ["RANK_ID"])
'''


def test_ascend_launch_reads_devices_from_the_rank_table(tmp_path):
    # A copy of the repository layout whose train.py is the stub; src/ and configs/ are the real ones.
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for script in ("run_distribute_train_ascend.sh", "env.sh"):
        shutil.copy(os.path.join(ROOT, "scripts", script), repo / "scripts")
    os.symlink(os.path.join(ROOT, "src"), repo / "src")
    os.symlink(os.path.join(ROOT, "configs"), repo / "configs")
    (repo / "train.py").write_text(STUB)

    work = tmp_path / "work"                      # the user's folder: relative paths are taken from here
    (work / "tables").mkdir(parents=True)
    (work / "trials.txt").write_text("1 a/b/1.wav c/d/2.wav\n")
    table = make_rank_table([2, 5, 7], ["192.168.100.102", "192.168.101.105", "192.168.102.107"], "10.0.0.9")
    with open(work / "tables" / "hccl_3p.json", "w") as f:
        json.dump(table, f)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env.pop("SERVER_ID", None)
    env.pop("RUN_DIR", None)
    done = subprocess.run(["bash", str(repo / "scripts" / "run_distribute_train_ascend.sh"), "tables/hccl_3p.json",
                           "--output_dir", "out", "--train_dir", "data/train", "--exclude_trials", "[trials.txt]",
                           "--resume"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 ranks" in done.stdout and "all ranks finished" in done.stdout

    run_dir = work / "out" / "distribute"
    frozen = yaml.safe_load((run_dir / "launch_config.yaml").read_text())
    assert frozen["output_dir"] == str(work / "out")
    assert frozen["train_list_dir"] == os.path.join(str(work), "runs", "voxceleb", "lists")
    assert frozen["exclude_trials"] == [str(work / "trials.txt")]
    assert frozen["resume"] == "latest"                   # a bare --resume, as train.py reads it
    for rank, device in enumerate((2, 5, 7)):
        folder = run_dir / f"rank_{rank}"
        started = json.loads((folder / "started.json").read_text())
        assert started["cwd"] == str(folder)
        assert started["env"] == {"RANK_TABLE_FILE": str(work / "tables" / "hccl_3p.json"), "RANK_ID": str(rank),
                                  "RANK_SIZE": "3", "DEVICE_ID": str(device)}
        argv = started["argv"]
        assert argv[argv.index("--config") + 1] == str(run_dir / "launch_config.yaml")
        assert argv[argv.index("--device_id") + 1] == str(device)
        assert "--distributed" in argv and "Ascend" in argv
        assert f"stub rank {rank}" in (folder / "train.log").read_text()


def test_ascend_launch_rejects_a_bad_rank_table(tmp_path):
    table = make_rank_table([0, 1], ["192.168.100.101", "192.168.101.101"], "10.0.0.1")
    table["server_list"][0]["device"][1]["device_ip"] = "192.168.1"
    (tmp_path / "bad.json").write_text(json.dumps(table))
    done = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_distribute_train_ascend.sh"), "bad.json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "server_list[0].device[1].device_ip" in done.stderr

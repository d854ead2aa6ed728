"""src/train/compile_cache.py: a second run of the same recipe loads the compiled train step and gives the same
losses; a run whose graph differs (here: the AAM scale, a constant inside the graph) never reads that cache."""
import json
import os
import shutil
import subprocess
import sys

from src.config import load_config
from src.train.compile_cache import graph_key

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--channels", "16", "--mfa_channels", "48", "--embedding_size", "8", "--attention_channels", "8",
        "--se_channels", "8", "--res2net_scale", "2", "--batch_size", "4", "--crop_seconds", "0.5"]


def key_of(*args, num_classes=4):
    return graph_key(dict(load_config(TINY + list(args))), num_classes, 1, "CPU")[0]


def test_the_key_follows_what_builds_the_graph():
    base = key_of()
    for args in (["--channels", "24"], ["--embedding_size", "12"], ["--embedding_norm", "true"], ["--aam_scale", "10"],
                 ["--seed", "5"], ["--batch_size", "8"], ["--grad_clip_norm", "0"], ["--specaugment", "false"],
                 ["--base_lr", "0.0001"]):
        assert key_of(*args) != base, args
    assert key_of(num_classes=5) != base
    assert graph_key(dict(load_config(TINY)), 4, 2, "CPU")[0] != base          # data-parallel ranks
    # Where the run writes, how long it lasts and the dataset workers' augmentation do not reach the graph.
    for args in (["--output_dir", "elsewhere"], ["--config", "configs/ecapa-tdnn_config.yaml"], ["--max_steps", "7"],
                 ["--resume", "latest"], ["--aug_prob", "0"],
                 ["--num_workers", "1"], ["--compile_cache_dir", "shared"], ["--eval_batch_size", "3"],
                 ["--diarize_batch_size", "3"], ["--runtime", "onnxruntime"]):
        assert key_of(*args) == base, args


def steps_in_a_new_process(cache_dir, *args, script=os.path.abspath(__file__)):
    """Two train steps of a tiny network in a process of its own (entry ``script``, this file or a copy), the first
    through the compile cache -> {"losses", "folder", "loaded"}."""
    done = subprocess.run([sys.executable, script, "--compile_cache_dir", str(cache_dir), *args],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def two_steps(args):
    """What train.py does with the cache (src/train/loop.py): the step's first call compiles inside ``compiling``."""
    import numpy as np
    import mindspore as ms
    from src.device import CompileLogged, setup_device
    from src.train.compile_cache import CompileCache
    from src.train.step import build_train_step
    setup_device("CPU")
    cfg = load_config(TINY + list(args))
    ms.set_seed(int(cfg.seed))
    step_cell, _ = build_train_step(cfg, 4, "CPU")
    step_cell.set_train()
    cache = CompileCache.from_config(cfg, 4, 1, "CPU")
    step = CompileLogged(step_cell, "training step", first_compile=cache.compiling)
    rng = np.random.default_rng(0)
    wav = ms.Tensor(rng.standard_normal((4, 8000)).astype(np.float32) * 0.1)
    labels = ms.Tensor(np.arange(4, dtype=np.int32))
    losses = [float(step(wav, labels)[0].asnumpy()) for _ in range(2)]
    return {"losses": losses, **cache.record()}


def test_a_second_run_loads_the_graph_and_a_changed_one_compiles(tmp_path):
    first = steps_in_a_new_process(tmp_path)
    assert not first["loaded"]
    assert os.path.isfile(os.path.join(first["folder"], "rank_0", "graph_cache", "compile_cache_0.mindir"))
    with open(os.path.join(first["folder"], "graph_key.json"), encoding="utf-8") as f:
        assert json.load(f)["recipe"]["aam_scale"] == 30.0
    again = steps_in_a_new_process(tmp_path)
    assert again["loaded"] and again["folder"] == first["folder"]
    assert again["losses"] == first["losses"]
    # MindSpore alone would load the scale-30 graph here and return its losses.
    other = steps_in_a_new_process(tmp_path, "--aam_scale", "10")
    assert not other["loaded"] and other["folder"] != first["folder"]
    assert other["losses"][0] < first["losses"][0] / 2          # loss of the scale-10 graph: about a third


def test_a_graph_mindspore_refuses_to_load_is_not_reported_as_loaded(tmp_path):
    """MindSpore's own check covers the entry script, which the project's key does not: after the script changes it
    compiles again and rewrites the saved graph. The run's record must then say the graph was compiled, not loaded."""
    script = tmp_path / "entry.py"
    shutil.copy(__file__, script)
    first = steps_in_a_new_process(tmp_path / "cache", script=str(script))
    with open(script, "a", encoding="utf-8") as f:
        f.write("# changed\n")
    again = steps_in_a_new_process(tmp_path / "cache", script=str(script))
    assert not first["loaded"] and again["folder"] == first["folder"]
    assert not again["loaded"]
    assert again["losses"] == first["losses"]


if __name__ == "__main__":         # steps_in_a_new_process (MindSpore's cache needs a script file to hash)
    print(json.dumps(two_steps(sys.argv[1:])))

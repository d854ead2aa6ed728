"""A persistent cache of the compiled train-step graph, so that a resumed run (or another run of the same recipe)
does not compile it again.

MindSpore saves the front end's compiled graph (``MS_COMPILER_CACHE_ENABLE`` / ``MS_COMPILER_CACHE_PATH``) and, on
the next run, loads it and runs only the back end's kernel build. Its own check covers the Python files the entry
script imports, nothing else: a cache written for another network size crashes the step, and one written with
another AAM scale or seed (graph constants, SpecAugment's random-op seeds) is used silently and gives other
numbers. So the cache lives in a folder named by ``graph_key``: a hash of everything the graph is built from (the
recipe without the keys that never reach it, the number of classes, the ranks, the device, MindSpore's and Python's
versions, the project's source files and MindSpore's ``MS_DEV_*`` settings). A run whose key differs gets a folder
of its own and compiles; it never reads another's.

The cache is switched on only around the step's first call (``CompileCache.compiling``): MindSpore numbers its
cached graphs in the order they compile while the cache is on, so no other graph of the process may slip in.

    cache = CompileCache.from_config(cfg, num_classes, world_size=1, device_target="CPU")
    with cache.compiling():
        step(wav, labels)            # compiles and saves, or loads the saved graph
"""
import contextlib
import glob
import hashlib
import json
import logging
import os
import platform
import sys

import mindspore as ms

from src.files import write_atomically

logger = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEY_FILE = "graph_key.json"
CACHED_GRAPH = os.path.join("rank_{rank}", "graph_cache", "compile_cache_0.mindir")   # MindSpore's layout

# Recipe keys that never enter the train-step graph: where data, logs and checkpoints are, how long the run lasts,
# what the dataset workers do to the waveforms, and the keys of the other commands (exact names, and the prefixes of
# whole command namespaces). Every other key, and any key added later, is part of the graph key.
NOT_IN_GRAPH = ("config", "output_dir", "device_id", "train_dir", "train_list_dir", "exclude_trials", "musan_dir",
                "rir_dir", "num_workers", "aug_prob", "reverb_prob", "noise_prob", "music_prob", "babble_prob",
                "noise_snr", "music_snr", "babble_snr", "babble_speakers", "num_epochs", "max_steps",
                "checkpoint_every_steps", "keep_checkpoints", "resume", "init_checkpoint", "log_every_steps",
                "holdout_speakers", "compile_cache", "compile_cache_dir", "checkpoint", "test_dir", "trials",
                "allow_outside_test_dir", "bucket_seconds", "max_eval_seconds", "embedding_cache", "score_norm",
                "asnorm_topk", "cohort_source", "cohort_utts_per_speaker", "subtract_mean", "training_speakers",
                "allow_training_speakers", "long_audio", "window_seconds", "window_hop_seconds",
                "int8_calibration_crops", "runtime", "runtime_cache_dir")
NOT_IN_GRAPH_PREFIXES = ("eval_", "calibration", "export_", "infer_", "vad", "cnceleb_", "diarize_")


def graph_recipe(values):
    """The recipe values (a dict) that can reach the train-step graph: all but ``NOT_IN_GRAPH`` and the keys of
    the evaluation, export and other commands (``NOT_IN_GRAPH_PREFIXES``)."""
    return {k: v for k, v in values.items()
            if k not in NOT_IN_GRAPH and not k.startswith(NOT_IN_GRAPH_PREFIXES)}


def source_sha256(root=ROOT):
    """sha256 over the project's Python files that build the graph (src/**/*.py and train.py), names and bytes."""
    digest = hashlib.sha256()
    paths = sorted(glob.glob(os.path.join(root, "src", "**", "*.py"), recursive=True))
    for path in paths + [os.path.join(root, "train.py")]:
        if os.path.isfile(path):
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def graph_key(values, num_classes, world_size, device_target):
    """-> (key, description): what the train-step graph is built from, and its sha256 (hex). ``values``: the
    recipe as a dict."""
    description = {
        "recipe": graph_recipe(values),
        "num_classes": int(num_classes),
        "world_size": int(world_size),
        "device_target": device_target,
        "mindspore": ms.__version__,
        "python": platform.python_version(),
        "source_sha256": source_sha256(),
        "ms_dev_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MS_DEV_")},
    }
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest(), description


class CompileCache:
    """The compile-cache folder of one train-step graph (``folder`` None: no cache).

    ``folder`` is ``<root>/<first 16 hex digits of graph_key>``; it holds ``graph_key.json`` (what the key covers,
    human-readable) and MindSpore's ``rank_<id>/graph_cache/`` files.
    """

    def __init__(self, folder, description=None, rank=0):
        self.folder, self.description, self.rank = folder, description, rank
        self.loaded = False

    @classmethod
    def from_config(cls, cfg, num_classes, world_size, device_target, rank=0):
        """The recipe's cache: off when ``compile_cache`` is false; else in ``compile_cache_dir`` ("":
        <output_dir>/compile_cache)."""
        if not cfg.compile_cache:
            return cls(None)
        root = cfg.compile_cache_dir or os.path.join(cfg.output_dir, "compile_cache")
        key, description = graph_key(dict(cfg), num_classes, world_size, device_target)
        return cls(os.path.join(root, key[:16]), dict(description, key=key), rank)

    @property
    def saved(self):
        """True when this folder holds a compiled graph for this rank."""
        return bool(self.folder) and os.path.isfile(os.path.join(self.folder, CACHED_GRAPH.format(rank=self.rank)))

    def record(self):
        """The run log's entry: the folder, and whether MindSpore loaded the graph from it."""
        return {"folder": self.folder, "loaded": self.loaded} if self.folder else None

    @contextlib.contextmanager
    def compiling(self):
        """Turn MindSpore's compile cache on (this folder) for the block, then restore the environment."""
        self.loaded = self.saved
        if self.folder and not os.path.isfile(os.path.realpath(sys.argv[0] if sys.argv else "")):
            # MindSpore hashes the entry script and what it imports; with none (python -c, a notebook) it fails.
            logger.warning("no compile cache: MindSpore's cache needs the program to run from a script file")
            self.folder, self.loaded = None, False
        if not self.folder:
            yield
            return
        os.makedirs(self.folder, exist_ok=True)
        key_path = os.path.join(self.folder, KEY_FILE)
        if not os.path.isfile(key_path):
            write_atomically(key_path, "w", lambda f: json.dump(self.description, f, indent=1, sort_keys=True,
                                                                default=str))
        logger.info("train-step graph: %s the compile cache %s", "loading it from" if self.loaded else "saving it to",
                    self.folder)
        names = ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH")
        before = {name: os.environ.get(name) for name in names}
        os.environ.update(MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=os.path.abspath(self.folder))
        stored = self.stored_version()
        try:
            yield
        finally:
            for name, value in before.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        if self.loaded and self.stored_version() != stored:
            self.loaded = False
            logger.warning("train-step graph: MindSpore did not use the graph saved in %s (its own check of the "
                           "entry script and the files that script imports found a change): it compiled again and "
                           "saved the new graph there", self.folder)

    def stored_version(self):
        """(modification time ns, size) of this rank's saved graph, None when there is none: MindSpore rewrites
        the file when it compiles instead of loading."""
        if not self.saved:
            return None
        info = os.stat(os.path.join(self.folder, CACHED_GRAPH.format(rank=self.rank)))
        return info.st_mtime_ns, info.st_size

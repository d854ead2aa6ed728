"""Every recipe key: its type and the values it may take, checked when a recipe is loaded (files and command line).

``check_recipe(values)`` refuses a recipe with one line naming the key, the value and what is allowed::

    channels: got -5; expected an integer >= 1
    score_norm: got 'znorm'; expected one of none, snorm, asnorm

``RULES`` is also the set of keys a full recipe file must hold: a file without a ``base`` recipe that lacks one of
them, or has another, is refused (src/config.py).
"""
import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Number:
    """An int (``integer=True``) or a float, within [low, high] (None: unbounded; ``above`` makes low exclusive)."""
    integer: bool = False
    low: float = None
    high: float = None
    above: bool = False

    def problem(self, value):
        kind = "an integer" if self.integer else "a number"
        ok = isinstance(value, int) if self.integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
            return f"expected {kind}{self.bounds()}"
        if self.low is not None and (value <= self.low if self.above else value < self.low):
            return f"expected {kind}{self.bounds()}"
        if self.high is not None and value > self.high:
            return f"expected {kind}{self.bounds()}"
        return None

    def bounds(self):
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.above else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return " " + " and ".join(parts) if parts else ""

    def bad_example(self):
        if self.low is not None:
            return self.low - 1 if not self.above else self.low
        return None


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``options`` (strings compared without case; True/False also match 'true'/'false')."""
    options: tuple

    def problem(self, value):
        text = str(value).lower()
        if text in {str(o).lower() for o in self.options}:
            return None
        return f"expected one of {', '.join(str(o) for o in self.options)}"

    def bad_example(self):
        return "nonsense" if isinstance(self.options[0], str) else 12345


@dataclasses.dataclass(frozen=True)
class Flag:
    """true or false."""

    def problem(self, value):
        return None if isinstance(value, bool) else "expected true or false"

    def bad_example(self):
        return None


@dataclasses.dataclass(frozen=True)
class Text:
    """A string (a path, a name); ``required`` refuses the empty string."""
    required: bool = False

    def problem(self, value):
        if not isinstance(value, str):
            return "expected a string"
        return "expected a non-empty string" if self.required and not value else None

    def bad_example(self):
        return None


@dataclasses.dataclass(frozen=True)
class Texts:
    """A list of strings (one string is taken as a list of one)."""

    def problem(self, value):
        items = value if isinstance(value, list) else [value]
        return None if all(isinstance(v, str) for v in items) else "expected a list of strings"

    def bad_example(self):
        return None


@dataclasses.dataclass(frozen=True)
class Numbers:
    """A list of numbers, each checked by ``item``; ``pair`` asks for exactly [low, high] with low <= high."""
    item: Number
    pair: bool = False

    def problem(self, value):
        if not isinstance(value, list):
            return "expected a list of numbers"
        if self.pair and (len(value) != 2 or any(self.item.problem(v) for v in value) or value[0] > value[1]):
            return f"expected [low, high] with low <= high, each {self.item.problem(None)[len('expected '):]}"
        if any(self.item.problem(v) for v in value):
            return f"expected a list, each item {self.item.problem(None)[len('expected '):]}"
        return None

    def bad_example(self):
        return [2, 1] if self.pair else [self.item.bad_example()]


POSITIVE_INT = Number(integer=True, low=1)
COUNT = Number(integer=True, low=0)
PROBABILITY = Number(low=0, high=1)
SECONDS = Number(low=0, above=True)

RULES = {
    # run
    "device_target": Choice(("Ascend", "GPU", "CPU")),
    "device_id": COUNT,
    "seed": COUNT,
    "output_dir": Text(required=True),
    # features
    "sample_rate": Choice((16000,)),
    "n_mels": Number(integer=True, low=1, high=201),
    "front_end": Choice(("speechbrain", "kaldi")),
    "kaldi_window": Choice(("povey", "hamming")),
    "kaldi_scale_16bit": Flag(),
    "kaldi_mean_norm": Flag(),
    "kaldi_snip_edges": Flag(),
    "kaldi_high_freq": Number(low=-7980, high=8000, above=True),   # Hz; 0: Nyquist, < 0: Nyquist + value (_pairs)
    # model
    "channels": POSITIVE_INT,
    "mfa_channels": POSITIVE_INT,
    "embedding_size": POSITIVE_INT,
    "attention_channels": POSITIVE_INT,
    "se_channels": POSITIVE_INT,
    "res2net_scale": POSITIVE_INT,
    "global_context": Flag(),
    "padding": Choice(("reflect", "zeros")),
    "mfa_norm": Flag(),
    "attention_norm": Flag(),
    "pooling_stats": Choice(("speechbrain", "wespeaker")),
    "embedding_norm": Flag(),
    # model depth: one entry per layer (first TDNN, each SE-Res2Block, MFA), as SpeechBrain's ECAPA_TDNN
    "kernel_sizes": Numbers(Number(integer=True, low=1)),
    "dilations": Numbers(Number(integer=True, low=1)),
    # loss
    "aam_margin": Number(low=0, high=1),
    "aam_scale": Number(low=0, above=True),
    "margin_warmup_steps": COUNT,
    "margin_warmup_start": Number(low=0, high=1),
    # data
    "train_dir": Text(),
    "train_list_dir": Text(),
    "exclude_trials": Texts(),
    "musan_dir": Text(),
    "rir_dir": Text(),
    "crop_seconds": Number(low=0.1),
    "batch_size": POSITIVE_INT,
    "num_workers": COUNT,
    "aug_prob": PROBABILITY,
    "reverb_prob": PROBABILITY,
    "noise_prob": PROBABILITY,
    "music_prob": PROBABILITY,
    "babble_prob": PROBABILITY,
    "noise_snr": Numbers(Number(low=-30, high=100), pair=True),
    "music_snr": Numbers(Number(low=-30, high=100), pair=True),
    "babble_snr": Numbers(Number(low=-30, high=100), pair=True),
    "babble_speakers": Numbers(POSITIVE_INT, pair=True),
    "speed_perturb": Flag(),
    "specaugment": Flag(),
    "specaug_max_time": COUNT,
    "specaug_max_freq": COUNT,
    # training
    "num_epochs": POSITIVE_INT,
    "max_steps": COUNT,
    "base_lr": Number(low=0),
    "max_lr": Number(low=0),
    "lr_mode": Choice(("triangular", "triangular2")),
    "lr_step_size": POSITIVE_INT,
    "lr_warmup_steps": COUNT,
    "weight_decay": Number(low=0),
    "grad_clip_norm": Number(low=0),
    "mixed_precision": Choice(("auto", True, False)),
    "loss_scale_init": Number(low=0, above=True),
    "loss_scale_window": POSITIVE_INT,
    "checkpoint_every_steps": POSITIVE_INT,
    "keep_checkpoints": COUNT,
    "resume": Text(),
    "init_checkpoint": Text(),
    "freeze_network_steps": COUNT,
    "log_every_steps": POSITIVE_INT,
    "distributed": Flag(),
    # evaluation
    "checkpoint": Text(),
    "test_dir": Text(),
    "trials": Texts(),
    "allow_outside_test_dir": Flag(),
    "eval_output_dir": Text(),
    "bucket_seconds": Numbers(SECONDS),
    "max_eval_seconds": SECONDS,
    "eval_batch_size": POSITIVE_INT,
    "eval_batch_seconds": SECONDS,
    "embedding_cache": Text(),
    "score_norm": Choice(("none", "snorm", "asnorm")),
    "asnorm_topk": Number(integer=True, low=2),
    "cohort_source": Text(),
    "cohort_utts_per_speaker": POSITIVE_INT,
    "subtract_mean": Flag(),
    # score calibration (python -m src.calibrate, eval.py, verify)
    "calibration": Text(),
    "calibration_source": Text(),
    "calibration_quality": Texts(),
    "calibration_seconds": Numbers(Number(low=0.1), pair=True),
    "calibration_utts_per_speaker": POSITIVE_INT,
    "calibration_trials": Number(integer=True, low=2),
    "calibration_prior": Number(low=0, high=0.999, above=True),
    # held-out speakers: set aside by training, calibrated on by default (src/data/lists.py, src/evaluate/calibrate.py)
    "holdout_speakers": Number(low=0),
    "training_speakers": Text(),
    "allow_training_speakers": Flag(),
    # export and inference
    "export_file": Text(),
    "export_format": Choice(("MINDIR", "AIR", "ONNX")),
    "export_input": Choice(("waveform", "fbank")),
    "export_batch_size": POSITIVE_INT,
    "export_seconds": SECONDS,
    "export_dynamic": Flag(),
    "export_tolerance": Number(low=0),
    "export_int8": Flag(),
    "export_sherpa": Flag(),
    "infer_model": Text(),
    "infer_dir": Text(),
    "infer_utt_list": Text(),
    "infer_max_windows": COUNT,
    "infer_cohort": Text(),
    # recordings: voice activity detection and long audio (src/recordings/)
    "vad": Choice(("none", "silero")),
    "vad_threshold": Number(low=0, high=1, above=True),
    "vad_min_speech_seconds": Number(low=0),
    "vad_min_silence_seconds": Number(low=0),
    "vad_pad_seconds": Number(low=0),
    "long_audio": Choice(("windows", "crop")),
    "window_seconds": SECONDS,
    "window_hop_seconds": SECONDS,
    # CN-Celeb protocol (eval.py, src/data/cnceleb.py)
    "cnceleb_enrollment": Choice(("mean", "concat")),
    "cnceleb_data_dir": Text(),
    # diarization (python -m src.diarize, src/diarize/)
    "diarize_vad": Choice(("silero", "none")),
    "diarize_window_seconds": SECONDS,
    "diarize_hop_seconds": SECONDS,
    "diarize_min_window_seconds": SECONDS,
    "diarize_merge_gap_seconds": Number(low=0),
    "diarize_chunk_seconds": Number(low=10),
    "diarize_batch_size": POSITIVE_INT,
    "diarize_clustering": Choice(("spectral", "agglomerative")),
    "diarize_pruning": Number(low=0, high=1, above=True),
    "diarize_threshold": Number(low=0, high=2, above=True),
    "diarize_max_dense_windows": Number(integer=True, low=10),
    "diarize_micro_clusters": Number(integer=True, low=10),
    # ---- speed (issue 23): static int8 calibration, the runtime behind every CPU command ----
    "int8_calibration_crops": POSITIVE_INT,
    "runtime": Choice(("mindspore", "onnxruntime")),
    "runtime_cache_dir": Text(),
    # ---- whole training runs (issue 23): the train step's compile cache (src/train/compile_cache.py) ----
    "compile_cache": Flag(),
    "compile_cache_dir": Text(),
}


def _pairs(values):
    """Rules that tie two keys together -> list of (key, problem)."""
    problems = []
    if values["channels"] % values["res2net_scale"]:
        problems.append(("channels", f"got {values['channels']}; expected a multiple of res2net_scale "
                                     f"({values['res2net_scale']})"))
    kernels, dilations = values["kernel_sizes"], values["dilations"]
    if len(kernels) < 3 or any(k % 2 == 0 for k in kernels):
        problems.append(("kernel_sizes", f"got {kernels}; expected at least 3 odd numbers (first TDNN, each "
                                         f"SE-Res2Block, MFA)"))
    if len(dilations) != len(kernels):
        problems.append(("dilations", f"got {dilations}; expected one per layer, as kernel_sizes ({len(kernels)})"))
    if values["base_lr"] > values["max_lr"]:
        problems.append(("base_lr", f"got {values['base_lr']}; expected at most max_lr ({values['max_lr']})"))
    high, nyquist = values["kaldi_high_freq"], values["sample_rate"] / 2
    if not 20 < (high if high > 0 else nyquist + high) <= nyquist:
        problems.append(("kaldi_high_freq", f"got {high}; expected at most 0 (Nyquist + value: the top mel filter edge "
                                            f"above 20 Hz) or a frequency above 20 Hz (the lowest filter edge)"))
    if values["window_hop_seconds"] > values["window_seconds"]:
        problems.append(("window_hop_seconds", f"got {values['window_hop_seconds']}; expected at most window_seconds "
                                               f"({values['window_seconds']})"))
    if values["diarize_hop_seconds"] > values["diarize_window_seconds"]:
        problems.append(("diarize_hop_seconds", f"got {values['diarize_hop_seconds']}; expected at most "
                                                f"diarize_window_seconds ({values['diarize_window_seconds']})"))
    if values["diarize_micro_clusters"] > values["diarize_max_dense_windows"]:
        problems.append(("diarize_micro_clusters", f"got {values['diarize_micro_clusters']}; expected at most "
                                                   f"diarize_max_dense_windows ({values['diarize_max_dense_windows']})"))
    total = values["noise_prob"] + values["music_prob"] + values["babble_prob"]
    if total > 1 + 1e-9:
        problems.append(("noise_prob", f"noise_prob + music_prob + babble_prob is {total:g}; expected at most 1"))
    return problems


def check_recipe(values, source="recipe"):
    """Check every key of ``values`` (a dict) against RULES; raise ValueError naming the first bad key, its value
    and what is allowed. Keys without a rule are left to the caller (src/config.py refuses them)."""
    for key, rule in RULES.items():
        if key in values:
            problem = rule.problem(values[key])
            if problem:
                raise ValueError(f"{key}: got {values[key]!r}; {problem} ({source})")
    if all(key in values for key in RULES):
        for key, problem in _pairs(values):
            raise ValueError(f"{key}: {problem} ({source})")
    return values

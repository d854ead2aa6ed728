"""The training loop: epochs of sharded batches through the one-graph train step, logging, checkpoints, resume.

Steps are counted globally: ``global_step`` is the number of batches every rank has processed (all ranks take the
same number of equal batches). With mixed precision a step whose gradients overflow updates nothing and is counted
in ``overflow_steps``; the learning rate follows the optimizer's own count of applied updates.

Resume restores every parameter, the Adam moments, the loss scale, the step counters and the data position
(epoch and batch index inside it). The data pipeline draws each sample's crop and augmentation from
``(seed, epoch, index)``, so continuing at the saved batch index reproduces the uninterrupted run exactly on CPU
(float32). SpecAugment's masks come from MindSpore's in-graph random ops, whose state is not saved: with
``specaugment: true`` a resumed run gets other masks than an uninterrupted one.

Fine-tuning (``init_checkpoint``) starts a new run (step 0, a fresh optimizer and schedule, the first batch) from
another checkpoint's weights (src/train/step.py); once the run has a checkpoint of its own, resume continues it and
``init_checkpoint`` is not used (``starting_point``).

Reading order: ``train`` sets up the run and loops over epochs; ``run_epoch`` runs one epoch's batches; the pieces
it calls (``LogWindow``, ``checkpoint_due``, ``TrainState.advance``, ``end_epoch``) are each one small function.
"""
import contextlib
import dataclasses
import json
import logging
import os
import time

import mindspore as ms
from tqdm import tqdm

from src.checkpoint import (latest_checkpoint, list_checkpoints, parameters_sha256, read_training_speakers,
                            recipe_for_checkpoint, restore_checkpoint, save_checkpoint)
from src.cli import log_to_file
from src.config import save_config
from src.data.augment import WaveAugment
from src.data.dataset import (count_skipped, create_train_dataset, num_train_classes, train_list_from_config,
                              unreadable_log)
from src.model.embedder import embedder_settings
from src.model.loss import margin_at_step
from src.device import CompileLogged
from src.train.compile_cache import CompileCache
from src.train.distributed import any_rank, barrier
from src.train.run_folder import RunLock, StopRequests, TrainingStopped, check_output_dir
from src.train.step import build_train_step, classifier_lr

logger = logging.getLogger(__name__)

TRAIN_LOG = "train_log.jsonl"       # one JSON object per logged step / epoch, rank 0 only
CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass
class TrainState:
    """Where training stands; saved as the checkpoint's ``train_state`` and restored on resume."""
    global_step: int = 0          # batches processed by every rank
    updates: int = 0              # optimizer updates applied (global_step minus overflowed steps)
    overflow_steps: int = 0       # mixed precision: steps skipped because gradients overflowed
    epoch: int = 0
    step_in_epoch: int = 0        # batches of ``epoch`` already processed
    batch_size: int = 0           # per rank
    world_size: int = 1
    seed: int = 0
    num_classes: int = 0

    def advance(self, overflow, steps_per_epoch):
        """Count one processed batch; roll over to the next epoch after its last batch."""
        self.global_step += 1
        self.step_in_epoch += 1
        self.overflow_steps += int(overflow)
        self.updates += int(not overflow)
        if self.step_in_epoch >= steps_per_epoch:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0

    @property
    def at_epoch_start(self):
        return self.step_in_epoch == 0


class JsonLog:
    """Append-only JSON-lines log (``train_log.jsonl``); a no-op on ranks other than 0."""

    def __init__(self, path, enabled):
        self.path = path if enabled else None

    def write(self, **record):
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


@dataclasses.dataclass
class LogWindow:
    """Sums over the steps since the last log line."""
    loss: float = 0.0
    correct: float = 0.0
    samples: int = 0
    steps: int = 0
    start: float = dataclasses.field(default_factory=time.time)

    def add(self, loss, correct, samples):
        self.loss += loss
        self.correct += correct
        self.samples += samples
        self.steps += 1

    def record(self, state, epoch, world_size, lr, margin, loss_scale):
        """The log record of this window (mean loss, accuracy, learning rate, margin, speed)."""
        seconds = time.time() - self.start
        return {"global_step": state.global_step, "epoch": epoch, "loss": self.loss / self.steps,
                "accuracy": self.correct * world_size / self.samples, "lr": lr, "margin": margin,
                "samples_per_second": self.samples / max(seconds, 1e-9), "loss_scale": loss_scale,
                "overflow_steps": state.overflow_steps}


class PhaseTimes:
    """Where a run's wall time goes, in seconds: ``setup`` (training list, train-step graph built), ``dataset``
    (each epoch's dataset started), ``first_step`` (the first step: graph compile and one step), ``step`` (the
    other steps, to their results on the host), ``data_wait`` (waiting for the next batch), ``checkpoint``
    (writing checkpoints), ``other`` (logging, the progress bar). ``lap(phase)`` adds the time since the last lap
    to ``phase``."""

    PHASES = ("setup", "dataset", "first_step", "step", "data_wait", "checkpoint", "other")

    def __init__(self):
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self.steps = 0
        self.last = time.perf_counter()

    def lap(self, phase):
        now = time.perf_counter()
        self.seconds[phase] += now - self.last
        self.last = now

    def record(self):
        """The log record: seconds per phase, steps, and data wait as a share of the step time."""
        steps = self.seconds["step"] + self.seconds["first_step"]
        return {"seconds": {k: round(v, 3) for k, v in self.seconds.items()}, "steps": self.steps,
                "data_wait_per_step_time": round(self.seconds["data_wait"] / steps, 4) if steps else None}


def resolve_resume(resume, checkpoint_dir):
    """``resume`` setting -> checkpoint path or None ("" = fresh start, "latest" = newest in checkpoint_dir)."""
    if not resume:
        return None
    if resume == "latest":
        path = latest_checkpoint(checkpoint_dir)
        if path is None:
            logger.warning("resume latest: no checkpoint in %s yet; starting a new run", checkpoint_dir)
        return path
    if not os.path.isfile(resume):
        raise FileNotFoundError(f"resume: checkpoint not found: {resume}")
    return resume


def resolve_init_checkpoint(path):
    """``init_checkpoint`` setting -> checkpoint file or None: a file as it is; a run folder (or a folder of
    checkpoints) -> its newest checkpoint."""
    if not path:
        return None
    if os.path.isdir(path):
        found = list_checkpoints(os.path.join(path, CHECKPOINT_DIR)) or list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"init_checkpoint: no checkpoint in {path} (nor in {path}/{CHECKPOINT_DIR})")
        return found[-1][1]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_checkpoint: checkpoint not found: {path}")
    return path


def starting_point(cfg):
    """-> (recipe, resume checkpoint or None, init checkpoint or None). Resuming this run's own checkpoint wins;
    ``init_checkpoint`` only starts a new run. The recipe takes the model keys the starting checkpoint carries, as
    eval.py does (src/checkpoint.py ``recipe_for_checkpoint``: a contradicting command-line key is refused)."""
    resume_path = resolve_resume(cfg.resume, os.path.join(cfg.output_dir, CHECKPOINT_DIR))
    if resume_path and cfg.init_checkpoint:
        logger.info("resuming from %s: init_checkpoint %s is not used (it only starts a new run)", resume_path,
                    cfg.init_checkpoint)
    init_path = None if resume_path else resolve_init_checkpoint(cfg.init_checkpoint)
    start = resume_path or init_path
    return (recipe_for_checkpoint(cfg, start) if start else cfg), resume_path, init_path


def data_position(saved, batch_size, world_size):
    """(epoch, batch index) to continue from a saved state dict, re-mapped if the global batch size changed."""
    epoch, step_in_epoch = int(saved["epoch"]), int(saved["step_in_epoch"])
    old_global_batch = int(saved["batch_size"]) * int(saved["world_size"])
    new_global_batch = batch_size * world_size
    if step_in_epoch and old_global_batch != new_global_batch:
        consumed = step_in_epoch * old_global_batch
        step_in_epoch = consumed // new_global_batch
        logger.warning("resuming with %d ranks x batch %d instead of %d x %d: the epoch's shards differ, so epoch %d "
                       "continues at batch %d (about the same share of the data; not an exact continuation)",
                       world_size, batch_size, saved["world_size"], saved["batch_size"], epoch, step_in_epoch)
    return epoch, step_in_epoch


def start_state(cfg, rank, num_classes, step_cell, resume_path):
    """A fresh TrainState, or the one of the checkpoint ``resume_path`` (its parameters loaded into ``step_cell``)."""
    state = TrainState(batch_size=int(cfg.batch_size), world_size=rank.size, seed=int(cfg.seed),
                       num_classes=num_classes)
    if not resume_path:
        return state
    saved = restore_checkpoint(step_cell, resume_path)     # raises if the classes or the model differ
    if int(saved.get("seed", cfg.seed)) != int(cfg.seed):
        logger.warning("resuming with seed %s but the checkpoint was trained with seed %s: the data order and "
                       "augmentation from here on differ from the interrupted run", cfg.seed, saved["seed"])
    state.global_step, state.updates, state.overflow_steps = (int(saved[k]) for k in
                                                              ("global_step", "updates", "overflow_steps"))
    state.epoch, state.step_in_epoch = data_position(saved, int(cfg.batch_size), rank.size)
    logger.info("resumed from %s: global step %d, epoch %d, batch %d", resume_path, state.global_step, state.epoch,
                state.step_in_epoch)
    return state


def reached_max_steps(state, max_steps):
    return bool(max_steps) and state.global_step >= max_steps


def checkpoint_due(state, every_steps, last):
    """Save at every epoch end, at the last step, and every ``every_steps`` global steps."""
    return state.at_epoch_start or last or state.global_step % every_steps == 0


def stop_agreed(stop, rank):
    """True when a stop was requested on any rank (data-parallel ranks must stop at the same step)."""
    return any_rank(bool(stop.requested)) if rank.size > 1 else bool(stop.requested)


def update_margin(classifier, global_step, cfg):
    """AAM margin warm-up: during the first ``margin_warmup_steps`` steps the margin grows linearly from
    ``margin_warmup_start`` to ``aam_margin``."""
    warmup_steps = int(cfg.margin_warmup_steps)
    if warmup_steps > 0 and global_step <= warmup_steps:
        classifier.set_margin(margin_at_step(global_step, cfg.aam_margin, warmup_steps, cfg.margin_warmup_start))


def end_epoch(cfg, state, epoch, log):
    """Log the finished epoch: unreadable files skipped by every rank (one shared log), overflowed steps."""
    skipped = count_skipped(cfg.output_dir, epoch)
    log.write(event="epoch_end", epoch=epoch, global_step=state.global_step, unreadable_files=skipped,
              overflow_steps=state.overflow_steps)
    logger.info("epoch %d done at global step %d: %d unreadable audio file(s) skipped%s, %d overflowed step(s) "
                "skipped so far", epoch, state.global_step, skipped,
                f" (listed in {unreadable_log(cfg.output_dir).path})" if skipped else "", state.overflow_steps)


def run_epoch(cfg, rank, state, step_cell, train_net, train_list, augment, log, save, stop, times):
    """Run the rest of epoch ``state.epoch`` (or up to max_steps): step, log, checkpoint, timing each phase into
    ``times`` (PhaseTimes). On a stop request (``stop``, src/train/run_folder.py StopRequests) save and raise
    TrainingStopped at the step boundary."""
    epoch, max_steps = state.epoch, int(cfg.max_steps)
    times.lap("other")
    dataset, steps_per_epoch = create_train_dataset(cfg, train_list, epoch, rank.size, rank.rank,
                                                    start_step=state.step_in_epoch, augment=augment)
    total = steps_per_epoch - state.step_in_epoch
    if max_steps:
        total = min(total, max_steps - state.global_step)
    bar = tqdm(total=total, desc=f"epoch {epoch}", disable=not rank.is_main, dynamic_ncols=True)
    window, stop_requested = LogWindow(), False
    batches = dataset.create_tuple_iterator(num_epochs=1)
    times.lap("dataset")
    for wav, labels in batches:
        times.lap("data_wait")
        stop.watch()
        update_margin(train_net.classifier, state.global_step, cfg)
        loss, correct, overflow, scale = step_cell(wav, labels)
        loss, overflow = float(loss.asnumpy()), bool(overflow.asnumpy())
        times.lap("first_step" if times.steps == 0 else "step")
        times.steps += 1
        state.advance(overflow, steps_per_epoch)
        window.add(loss, float(correct.asnumpy()), int(wav.shape[0]) * rank.size)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        last_step = reached_max_steps(state, max_steps)
        if window.steps == int(cfg.log_every_steps) or state.at_epoch_start or last_step:
            lr = classifier_lr(step_cell)
            margin = float(train_net.classifier.margin.asnumpy())
            record = window.record(state, epoch, rank.size, lr, margin, float(scale.asnumpy()))
            log.write(**record)
            if rank.is_main:
                logger.info("epoch %d step %d: loss %.4f accuracy %.3f lr %.3e %.1f samples/s", epoch,
                            state.global_step, record["loss"], record["accuracy"], lr, record["samples_per_second"])
            window = LogWindow()
        stop_requested = stop_agreed(stop, rank)
        times.lap("other")
        if checkpoint_due(state, int(cfg.checkpoint_every_steps), last_step or stop_requested):
            save()
            times.lap("checkpoint")
        if last_step or stop_requested or state.at_epoch_start:
            break
    bar.close()
    if state.at_epoch_start and rank.is_main:
        end_epoch(cfg, state, epoch, log)
    if stop_requested:
        raise TrainingStopped(f"stopped on request ({stop.requested or 'on another rank'}) at global step "
                              f"{state.global_step}: checkpoint saved in "
                              f"{os.path.join(cfg.output_dir, CHECKPOINT_DIR)}; continue with --resume")
    if not state.at_epoch_start and not reached_max_steps(state, max_steps):
        raise RuntimeError(f"epoch {epoch}: the dataset ended after batch {state.step_in_epoch} of "
                           f"{steps_per_epoch}")


def train(cfg, rank, device_target="CPU"):
    """Train the recipe ``cfg`` as rank ``rank`` (src.train.distributed.RankInfo) -> path of the last checkpoint.

    Nothing is written into output_dir until the folder, the data folders and the resume checkpoint have been
    checked; rank 0 holds the folder's lock while it trains. SIGINT / SIGTERM end the run at the next step boundary
    with a checkpoint (TrainingStopped)."""
    checkpoint_dir = os.path.join(cfg.output_dir, CHECKPOINT_DIR)
    cfg, resume_path, init_path = starting_point(cfg)
    if rank.is_main:
        check_output_dir(cfg.output_dir, checkpoint_dir, resuming=bool(resume_path))
    with RunLock(cfg.output_dir) if rank.is_main else contextlib.nullcontext():
        return _train(cfg, rank, device_target, checkpoint_dir, resume_path, init_path)


def _train(cfg, rank, device_target, checkpoint_dir, resume_path, init_path):
    times = PhaseTimes()
    # MUSAN and RIR folders first: a missing or empty one fails at once, naming it (the training list of
    # VoxCeleb2 can take a while to build).
    augment = WaveAugment.from_config(cfg)
    # Rank 0 makes (or checks) the training list; the others read it once it is there.
    train_list = train_list_from_config(cfg) if rank.is_main else None
    barrier(rank)
    if train_list is None:
        train_list = train_list_from_config(cfg)
    num_classes = num_train_classes(train_list, cfg.speed_perturb)
    ms.set_seed(int(cfg.seed))
    step_cell, train_net = build_train_step(cfg, num_classes, device_target, init_checkpoint=init_path)
    step_cell.set_train()
    state = start_state(cfg, rank, num_classes, step_cell, resume_path)
    # Everything checked: from here on the run writes its record.
    if rank.is_main:
        log_to_file(os.path.join(cfg.output_dir, "train.log"))
        save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    log = JsonLog(os.path.join(cfg.output_dir, TRAIN_LOG), rank.is_main)
    saved = []
    # Every checkpoint names the speakers its network has seen: this run's, plus those its starting point records.
    start = resume_path or init_path
    speakers = set(train_list.speakers) | set((read_training_speakers(start) if start else None) or [])

    def save():
        if rank.is_main:
            saved.append(save_checkpoint(step_cell, checkpoint_dir, state.global_step, dataclasses.asdict(state),
                                         keep=int(cfg.keep_checkpoints), settings=embedder_settings(cfg),
                                         speakers=speakers))
            logger.info("saved %s", saved[-1])

    logger.info("training %d classes on %d utterances, %d rank(s) x batch %d, %s", num_classes, len(train_list),
                rank.size, cfg.batch_size, "float16 + loss scaling" if step_cell.loss_scaling else "float32")
    cache = CompileCache.from_config(cfg, num_classes, rank.size, device_target, rank.rank)
    step = CompileLogged(step_cell, "training step", first_compile=cache.compiling)
    times.lap("setup")
    with StopRequests() as stop:
        while state.epoch < int(cfg.num_epochs) and not reached_max_steps(state, int(cfg.max_steps)):
            run_epoch(cfg, rank, state, step, train_net, train_list, augment, log, save, stop, times)
    times.lap("other")
    timing = times.record()
    log.write(event="run_end", global_step=state.global_step, compile_cache=cache.record(), **timing)
    logger.info("time: %s (data wait %.1f %% of the step time)", ", ".join(
        f"{k} {v:.1f} s" for k, v in timing["seconds"].items()), 100 * (timing["data_wait_per_step_time"] or 0))
    logger.info("training finished at global step %d (%d overflowed steps skipped)", state.global_step,
                state.overflow_steps)
    # Data-parallel ranks must agree exactly on the trainable parameters (batch-norm running statistics are
    # each rank's own; rank 0's are saved).
    logger.info("rank %d: sha256 of the trainable parameters %s", rank.rank,
                parameters_sha256(train_net.trainable_params()))
    return saved[-1] if saved else None

"""The training loop: epochs of sharded batches through the one-graph train step, logging, checkpoints, resume.

Steps are counted globally: ``global_step`` is the number of batches every rank has processed (all ranks take the
same number of equal batches). With mixed precision a step whose gradients overflow updates nothing and is counted
in ``overflow_steps``; the learning rate follows the optimizer's own count of applied updates.

Resume restores every parameter, the Adam moments, the loss scale, the step counters and the data position
(epoch and batch index inside it). The data pipeline draws each sample's crop and augmentation from
``(seed, epoch, index)``, so continuing at the saved batch index reproduces the uninterrupted run exactly on CPU
(float32). SpecAugment's masks come from MindSpore's in-graph random ops, whose state is not saved: with
``specaugment: true`` a resumed run gets other masks than an uninterrupted one.
"""
import hashlib
import json
import logging
import os
import time

import numpy as np
import mindspore as ms
from tqdm import tqdm

from src.checkpoint import latest_checkpoint, list_checkpoints, restore_checkpoint, save_checkpoint
from src.config import save_config
from src.data.augment import WaveAugment
from src.data.dataset import (count_skipped, create_train_dataset, num_train_classes, train_list_from_config,
                              unreadable_log)
from src.distributed import barrier
from src.loss import margin_at_step
from src.lr_schedule import cyclic_lr
from src.train_step import build_train_step

logger = logging.getLogger(__name__)

TRAIN_LOG = "train_log.jsonl"       # one JSON object per logged step / epoch, rank 0 only
CHECKPOINT_DIR = "checkpoints"


def resolve_resume(resume, checkpoint_dir):
    """``resume`` setting -> checkpoint path or None ("" = fresh start, "latest" = newest in checkpoint_dir)."""
    if not resume:
        return None
    if resume == "latest":
        path = latest_checkpoint(checkpoint_dir)
        if path is None:
            logger.warning("resume latest: no checkpoint in %s yet; starting from scratch", checkpoint_dir)
        return path
    if not os.path.isfile(resume):
        raise FileNotFoundError(f"resume: checkpoint not found: {resume}")
    return resume


def data_position(state, batch_size, world_size):
    """(epoch, batch index) to continue from a saved state, re-mapped if the global batch size changed."""
    epoch, step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
    old_global_batch = int(state["batch_size"]) * int(state["world_size"])
    new_global_batch = batch_size * world_size
    if step_in_epoch and old_global_batch != new_global_batch:
        consumed = step_in_epoch * old_global_batch
        step_in_epoch = consumed // new_global_batch
        logger.warning("resuming with %d ranks x batch %d instead of %d x %d: the epoch's shards differ, so epoch %d "
                       "continues at batch %d (about the same share of the data; not an exact continuation)",
                       world_size, batch_size, state["world_size"], state["batch_size"], epoch, step_in_epoch)
    return epoch, step_in_epoch


class JsonLog:
    """Append-only JSON-lines log (``train_log.jsonl``); a no-op on ranks other than 0."""

    def __init__(self, path, enabled):
        self.path = path if enabled else None

    def write(self, **record):
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def train(cfg, rank, device_target="CPU"):
    """Train the recipe ``cfg`` as rank ``rank`` (src.distributed.RankInfo) -> path of the last checkpoint."""
    checkpoint_dir = os.path.join(cfg.output_dir, CHECKPOINT_DIR)
    if rank.is_main:
        os.makedirs(checkpoint_dir, exist_ok=True)
        save_config(cfg, os.path.join(cfg.output_dir, "config.yaml"))
    # MUSAN and RIR folders first: a missing or empty one fails at once, naming it (the training list of
    # VoxCeleb2 can take a while to build).
    augment = WaveAugment.from_config(cfg)
    # Rank 0 makes (or checks) the training list; the others read it once it is there.
    train_list = train_list_from_config(cfg) if rank.is_main else None
    barrier(rank)
    if train_list is None:
        train_list = train_list_from_config(cfg)
    num_classes = num_train_classes(cfg, train_list)
    ms.set_seed(int(cfg.seed))
    step_cell, train_net = build_train_step(cfg, num_classes, device_target)
    step_cell.set_train()

    state = {"global_step": 0, "updates": 0, "overflow_steps": 0, "epoch": 0, "step_in_epoch": 0,
             "batch_size": int(cfg.batch_size), "world_size": rank.size, "seed": int(cfg.seed)}
    resume_path = resolve_resume(cfg.resume, checkpoint_dir)
    if not resume_path and list_checkpoints(checkpoint_dir):
        # A fresh run would mix its checkpoints with the old ones (and keep-last-K would delete the new ones).
        raise ValueError(f"output_dir: {checkpoint_dir} already holds checkpoints of an earlier run; continue it "
                         f"with --resume (latest) or --resume PATH, or choose another --output_dir")
    if resume_path:
        saved = restore_checkpoint(step_cell, resume_path)     # raises if the classes or the model differ
        if int(saved.get("seed", cfg.seed)) != int(cfg.seed):
            logger.warning("resuming with seed %s but the checkpoint was trained with seed %s: the data order and "
                           "augmentation from here on differ from the interrupted run", cfg.seed, saved["seed"])
        state.update({k: saved[k] for k in ("global_step", "updates", "overflow_steps")})
        state["epoch"], state["step_in_epoch"] = data_position(saved, int(cfg.batch_size), rank.size)
        logger.info("resumed from %s: global step %d, epoch %d, batch %d", resume_path, state["global_step"],
                    state["epoch"], state["step_in_epoch"])
    state.update(batch_size=int(cfg.batch_size), world_size=rank.size, num_classes=num_classes)

    log = JsonLog(os.path.join(cfg.output_dir, TRAIN_LOG), rank.is_main)
    last_saved = None

    def save():
        nonlocal last_saved
        if rank.is_main:
            last_saved = save_checkpoint(step_cell, checkpoint_dir, state["global_step"], state,
                                         keep=int(cfg.keep_checkpoints))
            logger.info("saved %s", last_saved)

    max_steps = int(cfg.max_steps)
    logger.info("training %d classes on %d utterances, %d rank(s) x batch %d, %s", num_classes, len(train_list),
                rank.size, cfg.batch_size, "float16 + loss scaling" if step_cell.loss_scaling else "float32")
    while state["epoch"] < int(cfg.num_epochs) and not (max_steps and state["global_step"] >= max_steps):
        epoch, start = state["epoch"], state["step_in_epoch"]
        dataset, steps_per_epoch = create_train_dataset(cfg, train_list, epoch, rank.size, rank.rank,
                                                        start_step=start, augment=augment)
        total = steps_per_epoch - start
        if max_steps:
            total = min(total, max_steps - state["global_step"])
        bar = tqdm(total=total, desc=f"epoch {epoch}", disable=not rank.is_main, dynamic_ncols=True)
        window = {"loss": 0.0, "correct": 0.0, "samples": 0, "steps": 0, "start": time.time()}
        for wav, labels in dataset.create_tuple_iterator(num_epochs=1):
            if int(cfg.margin_warmup_steps) > 0 and state["global_step"] <= int(cfg.margin_warmup_steps):
                train_net.classifier.set_margin(margin_at_step(state["global_step"], cfg.aam_margin,
                                                               cfg.margin_warmup_steps))
            lr = float(cyclic_lr(state["updates"], cfg.base_lr, cfg.max_lr, cfg.lr_step_size, cfg.lr_mode,
                                 cfg.lr_warmup_steps))
            loss, correct, overflow, scale = step_cell(wav, labels)
            loss, overflow = float(loss.asnumpy()), bool(overflow.asnumpy())
            state["global_step"] += 1
            state["step_in_epoch"] += 1
            state["overflow_steps"] += int(overflow)
            state["updates"] += int(not overflow)
            window["loss"] += loss
            window["correct"] += float(correct.asnumpy())
            window["samples"] += int(wav.shape[0]) * rank.size
            window["steps"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
            if state["step_in_epoch"] >= steps_per_epoch:
                state["epoch"], state["step_in_epoch"] = epoch + 1, 0
            stop = bool(max_steps) and state["global_step"] >= max_steps
            if window["steps"] == int(cfg.log_every_steps) or state["step_in_epoch"] == 0 or stop:
                seconds = time.time() - window["start"]
                record = {"global_step": state["global_step"], "epoch": epoch,
                          "loss": window["loss"] / window["steps"],
                          "accuracy": window["correct"] * rank.size / window["samples"], "lr": lr,
                          "samples_per_second": window["samples"] / max(seconds, 1e-9),
                          "loss_scale": float(scale.asnumpy()), "overflow_steps": state["overflow_steps"]}
                log.write(**record)
                if rank.is_main:
                    logger.info("epoch %d step %d: loss %.4f accuracy %.3f lr %.3e %.1f samples/s", epoch,
                                state["global_step"], record["loss"], record["accuracy"], lr,
                                record["samples_per_second"])
                window = {"loss": 0.0, "correct": 0.0, "samples": 0, "steps": 0, "start": time.time()}
            if state["step_in_epoch"] == 0 or stop or state["global_step"] % int(cfg.checkpoint_every_steps) == 0:
                save()
            if stop or state["step_in_epoch"] == 0:
                break
        bar.close()
        if state["step_in_epoch"] != 0 and not (max_steps and state["global_step"] >= max_steps):
            raise RuntimeError(f"epoch {epoch}: the dataset ended after batch {state['step_in_epoch']} of "
                               f"{steps_per_epoch}")
        if state["step_in_epoch"] == 0 and rank.is_main:
            # Every rank appends its unreadable files to one log in output_dir; count them all.
            skipped = count_skipped(cfg, epoch)
            log.write(event="epoch_end", epoch=epoch, global_step=state["global_step"], unreadable_files=skipped,
                      overflow_steps=state["overflow_steps"])
            logger.info("epoch %d done at global step %d: %d unreadable audio file(s) skipped%s, %d overflowed "
                        "step(s) skipped so far", epoch, state["global_step"], skipped,
                        f" (listed in {unreadable_log(cfg).path})" if skipped else "", state["overflow_steps"])
    logger.info("training finished at global step %d (%d overflowed steps skipped)", state["global_step"],
                state["overflow_steps"])
    # Data-parallel ranks must agree exactly on the trainable parameters (batch-norm running statistics are
    # each rank's own; rank 0's are saved).
    logger.info("rank %d: sha256 of the trainable parameters %s", rank.rank, trainable_digest(train_net))
    return last_saved


def trainable_digest(cell):
    """sha256 over the bytes of all trainable parameters, in name order (compares ranks exactly)."""
    digest = hashlib.sha256()
    for param in sorted(cell.trainable_params(), key=lambda p: p.name):
        digest.update(param.name.encode("utf-8"))
        digest.update(np.ascontiguousarray(param.asnumpy()).tobytes())
    return digest.hexdigest()

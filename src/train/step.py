"""The training network and its one-graph step: waveforms -> front end -> ECAPA-TDNN -> AAM-softmax loss -> update.

``SpeakerTrainNet`` holds the embedder (the recipe's front end + network, ``embedder.network`` is the embedding
network) and the AAM-softmax ``classifier``, under the attribute names src/checkpoint.py relies on. ``TrainStep`` is a
``TrainOneStepWithLossScaleCell`` whose ``construct`` does, in one compiled graph: forward, gradients, the
data-parallel gradient mean (when running distributed), loss-scale overflow check (mixed precision only), gradient
clipping by global norm and the Adam update.
Steps whose gradients overflowed are skipped (no update, the optimizer's ``global_step`` does not advance) and the
loss scale is lowered, as MindSpore's dynamic loss scaling does.

Fine-tuning (``build_train_step(..., init_checkpoint=PATH)``): the network starts from the weights of any checkpoint
src/checkpoint.py ``load_network_weights`` reads; the classifier from the checkpoint's ``classifier.weight`` when it
fits the run's classes (``initial_classifier``), else freshly drawn. ``freeze_network_steps`` holds the network's
learning rate at 0 for that many optimizer updates, so only the classifier learns meanwhile.
"""
import logging

import mindspore as ms
from mindspore import nn, ops

from src.checkpoint import CLASSIFIER_WEIGHT, load_network_weights, read_array
from src.data.augment import SPEED_FACTORS, SpecAugment
from src.model.ecapa_tdnn import build_ecapa
from src.model.embedder import Embedder, build_front_end
from src.model.layers import keep_batch_norm_float32
from src.model.loss import AAMSoftmax
from src.train.schedule import FrozenFor, schedule_from_config

logger = logging.getLogger(__name__)


class SpeakerTrainNet(nn.Cell):
    """(wav (B, S) float32, labels (B,) int32) -> (loss scalar, correct scalar float32).

    ``embedder`` (src.model.embedder.Embedder, SpecAugment inside it) gives the embeddings; every crop is full
    length (the dataset crops or repeats to ``crop_seconds``), so no length mask is needed. ``correct`` counts
    utterances whose nearest class weight (cosine, no margin) is their own speaker.
    """

    def __init__(self, embedder, classifier):
        super().__init__()
        self.embedder = embedder
        self.classifier = classifier

    def construct(self, wav, labels):
        embeddings = self.embedder(wav).astype(ms.float32)
        loss = self.classifier(embeddings, labels)
        predicted = ops.argmax(self.classifier.cosine_logits(embeddings), dim=-1).astype(ms.int32)
        correct = ops.stop_gradient((predicted == labels).astype(ms.float32).sum())
        return loss, correct


_unscale = ops.MultitypeFuncGraph("unscale")


@_unscale.register("Tensor", "Tensor")
def _unscale_gradient(scale, grad):
    """Divide one gradient by the loss scale."""
    return grad / scale.astype(grad.dtype)


_all_finite = ops.MultitypeFuncGraph("all_finite")


@_all_finite.register("Tensor")
def _gradient_is_finite(grad):
    """True when a gradient holds no inf or nan."""
    return ops.isfinite(grad).all()


class TrainStep(nn.TrainOneStepWithLossScaleCell):
    """One optimizer step: ``(wav, labels) -> (loss, correct, overflow, loss_scale)``.

    ``loss_scale`` None trains in float32 without loss scaling (CPU); else a ``nn.DynamicLossScaleUpdateCell``
    (or a fixed scale Tensor) whose overflowed steps are skipped. ``clip_norm`` > 0 clips the gradients' global
    norm (after unscaling and, in data-parallel mode, after the mean over ranks).
    """

    def __init__(self, train_net, optimizer, clip_norm=5.0, loss_scale=None):
        self.loss_scaling = loss_scale is not None
        super().__init__(train_net, optimizer, loss_scale if self.loss_scaling else ms.Tensor(1.0, ms.float32))
        self.clip_norm = float(clip_norm)
        # MindSpore's overflow check uses Ascend/GPU status ops; on CPU look for inf/nan in the (already
        # rank-averaged) gradients instead.
        self.cpu_target = ms.get_context("device_target") == "CPU"

    def construct(self, wav, labels):
        loss, correct = self.network(wav, labels)
        scale = self.scale_sense
        if self.loss_scaling:
            status, scale = self.start_overflow_check(loss, scale)
        sens = (ops.fill(loss.dtype, loss.shape, scale), ops.zeros_like(correct))
        grads = self.grad(self.network, self.weights)(wav, labels, sens)
        grads = self.grad_reducer(grads)
        overflow = ms.Tensor(False)
        if self.loss_scaling:
            grads = self.hyper_map(ops.partial(_unscale, scale), grads)
            if self.cpu_target:
                overflow = ops.logical_not(ops.stack(self.hyper_map(_all_finite, grads)).all())
            else:
                overflow = self.get_overflow_status(status, grads)
            overflow = self.process_loss_scale(overflow)
        if self.clip_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_norm)
        if not overflow:
            loss = ops.depend(loss, self.optimizer(grads))
        return loss, correct, overflow, scale


def use_mixed_precision(cfg, device_target):
    """float16 with loss scaling on Ascend/GPU, float32 on CPU, unless ``mixed_precision`` forces true/false."""
    setting = str(cfg.mixed_precision).lower()
    if setting == "auto":
        return device_target in ("Ascend", "GPU")
    if setting in ("true", "false"):
        return setting == "true"
    raise ValueError(f"mixed_precision: expected auto, true or false, got '{cfg.mixed_precision}'")


def initial_classifier(stored, num_classes, embedding_size, speed_perturb):
    """The class weights a fine-tuning run starts from -> (array (num_classes, embedding_size) or None, why).

    ``stored`` is the init checkpoint's ``classifier.weight`` (numpy, or None when it has none). Kept when its shape
    is the run's: the same number of classes is taken to be the same speakers in the same order (speakers are
    numbered in name order, here and in WeSpeaker). A speed-perturbed run's classifier (3 x num_classes rows, label
    ``speaker + k * speakers`` for speed copy k) fine-tuned without speed perturbation keeps its first num_classes
    rows, the original-speed speakers. Otherwise None: a fresh classifier.
    """
    want = (num_classes, embedding_size)
    if stored is None:
        return None, "the checkpoint has no classifier: a fresh classifier"
    if tuple(stored.shape) == want:
        return stored, f"classifier kept: {num_classes} classes, as in the checkpoint"
    copies = len(SPEED_FACTORS)
    if not speed_perturb and tuple(stored.shape) == (copies * num_classes, embedding_size):
        return stored[:num_classes], (f"classifier kept: the first {num_classes} of its {copies * num_classes} rows "
                                      f"(a speed-perturbed run's original-speed speakers)")
    return None, (f"a fresh classifier: the checkpoint's is {tuple(stored.shape)}, this run needs {want} "
                  f"({num_classes} classes)")


def start_from_checkpoint(network, classifier, path, speed_perturb):
    """Load the network weights of checkpoint ``path`` into ``network`` (raises CheckpointError naming the parameters
    that do not fit) and its class weights into ``classifier`` when they fit (``initial_classifier``); logs which."""
    load_network_weights(network, path)
    weight, why = initial_classifier(read_array(path, CLASSIFIER_WEIGHT), classifier.num_classes,
                                     classifier.weight.shape[1], speed_perturb)
    if weight is not None:
        classifier.weight.set_data(ms.Tensor(weight, ms.float32))
    logger.info("init_checkpoint %s: network weights loaded; %s", path, why)


def optimizer_groups(train_net, weight_decay, network_lr=None):
    """Adam's parameter groups: weight decay on weight matrices, not on biases / batch norm. With ``network_lr`` (a
    schedule) the network's parameters take that rate; the classifier keeps the optimizer's."""
    params = train_net.trainable_params()
    parts = [(params, {})]
    if network_lr is not None:
        head = {id(p) for p in train_net.classifier.trainable_params()}
        parts = [([p for p in params if id(p) not in head], {"lr": network_lr}),
                 ([p for p in params if id(p) in head], {})]
    groups = []
    for part, rate in parts:
        groups.append({"params": [p for p in part if p.ndim > 1], "weight_decay": weight_decay, **rate})
        groups.append({"params": [p for p in part if p.ndim <= 1], "weight_decay": 0.0, **rate})
    return [group for group in groups if group["params"]]


def classifier_lr(step_cell):
    """The classifier's learning rate at the optimizer's current step (the recipe's schedule; the network's is 0
    while frozen)."""
    optimizer = step_cell.optimizer
    schedule = optimizer.get_lr_parameter(step_cell.network.classifier.weight)
    return float(schedule(optimizer.global_step).reshape(()).asnumpy())


def build_train_step(cfg, num_classes, device_target="CPU", init_checkpoint=None):
    """Training network, Adam with the cyclic schedule and weight decay, and the step cell, from a recipe; with
    ``init_checkpoint`` the weights start from that checkpoint (``start_from_checkpoint``).

    Returns ``(train_step, train_net)``; ``train_net.classifier.set_margin`` drives the margin warm-up.
    """
    mixed = use_mixed_precision(cfg, device_target)
    network = build_ecapa(cfg)           # first: the seeded initialisation draws the network's weights first
    classifier = AAMSoftmax(cfg.embedding_size, num_classes, margin=cfg.aam_margin, scale=cfg.aam_scale)
    if init_checkpoint:
        start_from_checkpoint(network, classifier, init_checkpoint, cfg.speed_perturb)
    spec_augment = None
    if cfg.specaugment:
        spec_augment = SpecAugment(max_time=cfg.specaug_max_time, max_freq=cfg.specaug_max_freq)
    embedder = Embedder(network, spec_augment=spec_augment, front_end=build_front_end(cfg))
    if mixed:
        embedder.network = keep_batch_norm_float32(ms.amp.auto_mixed_precision(embedder.network, "O2"))
    train_net = SpeakerTrainNet(embedder, classifier)
    schedule = schedule_from_config(cfg)
    frozen = int(cfg.freeze_network_steps)
    if frozen:
        logger.info("the network is frozen for the first %d optimizer updates: only the classifier learns", frozen)
    groups = optimizer_groups(train_net, cfg.weight_decay, FrozenFor(schedule, frozen) if frozen else None)
    optimizer = nn.Adam(groups, learning_rate=schedule)
    loss_scale = None
    if mixed:
        loss_scale = nn.DynamicLossScaleUpdateCell(loss_scale_value=float(cfg.loss_scale_init), scale_factor=2,
                                                   scale_window=int(cfg.loss_scale_window))
    step = TrainStep(train_net, optimizer, clip_norm=cfg.grad_clip_norm, loss_scale=loss_scale)
    return step, train_net

"""The training network and its one-graph step: waveforms -> front end -> ECAPA-TDNN -> AAM-softmax loss -> update.

``SpeakerTrainNet`` holds the embedder (the recipe's front end + network, ``embedder.network`` is the embedding
network) and the AAM-softmax ``classifier``, under the attribute names src/checkpoint.py relies on. ``TrainStep`` is a
``TrainOneStepWithLossScaleCell`` whose ``construct`` does, in one compiled graph: forward, gradients, the
data-parallel gradient mean (when running distributed), loss-scale overflow check (mixed precision only), gradient
clipping by global norm and the Adam update.
Steps whose gradients overflowed are skipped (no update, the optimizer's ``global_step`` does not advance) and the
loss scale is lowered, as MindSpore's dynamic loss scaling does.
"""
import mindspore as ms
from mindspore import nn, ops

from src.data.augment import SpecAugment
from src.model.ecapa_tdnn import build_ecapa
from src.model.embedder import Embedder, build_front_end
from src.model.loss import AAMSoftmax
from src.train.schedule import schedule_from_config


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


def build_train_step(cfg, num_classes, device_target="CPU"):
    """Training network, Adam with the cyclic schedule and weight decay, and the step cell, from a recipe.

    Returns ``(train_step, train_net)``; ``train_net.classifier.set_margin`` drives the margin warm-up.
    """
    mixed = use_mixed_precision(cfg, device_target)
    network = build_ecapa(cfg)           # first: the seeded initialisation draws the network's weights first
    classifier = AAMSoftmax(cfg.embedding_size, num_classes, margin=cfg.aam_margin, scale=cfg.aam_scale)
    spec_augment = None
    if cfg.specaugment:
        spec_augment = SpecAugment(max_time=cfg.specaug_max_time, max_freq=cfg.specaug_max_freq)
    embedder = Embedder(network, spec_augment=spec_augment, front_end=build_front_end(cfg))
    if mixed:
        embedder.network = ms.amp.auto_mixed_precision(embedder.network, "O2")     # batch norm stays float32
    train_net = SpeakerTrainNet(embedder, classifier)
    decayed = [p for p in train_net.trainable_params() if p.ndim > 1]      # no weight decay on biases / BN
    others = [p for p in train_net.trainable_params() if p.ndim <= 1]
    groups = [{"params": decayed, "weight_decay": cfg.weight_decay}, {"params": others, "weight_decay": 0.0}]
    optimizer = nn.Adam(groups, learning_rate=schedule_from_config(cfg))
    loss_scale = None
    if mixed:
        loss_scale = nn.DynamicLossScaleUpdateCell(loss_scale_value=float(cfg.loss_scale_init), scale_factor=2,
                                                   scale_window=int(cfg.loss_scale_window))
    step = TrainStep(train_net, optimizer, clip_norm=cfg.grad_clip_norm, loss_scale=loss_scale)
    return step, train_net

"""Train ECAPA-TDNN speaker embeddings (AAM-softmax on speaker classes) on a VoxCeleb-style folder.

    python train.py [--config configs/ecapa-tdnn_config.yaml] [--device_target Ascend|GPU|CPU] [--key value ...]
    python train.py --config configs/demo_config.yaml --resume          # continue from the newest checkpoint
    python train.py ... --resume runs/x/checkpoints/ckpt_step00002000.ckpt
    python train.py ... --init_checkpoint PATH.ckpt     # fine-tune: a new run from another checkpoint's weights
    python train.py --config configs/ecapa-tdnn_lm.yaml # large-margin fine-tuning of runs/voxceleb's newest checkpoint

Writes into output_dir: config.yaml (the resolved recipe), train.log, train_log.jsonl (JSON lines: loss,
accuracy, learning rate, samples/s) and checkpoints/ckpt_step<N>.ckpt (network, classifier, optimizer, data
position). Data-parallel runs are started by scripts/run_distribute_train_*.sh.
"""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

import sys

from src.cli import run_command, setup_logging
from src.config import load_config, resume_flag_to_value
from src.device import setup_device
from src.train.distributed import init_data_parallel
from src.train.loop import train


def main(argv=None):
    argv = resume_flag_to_value(sys.argv[1:] if argv is None else argv)
    cfg = load_config(argv, description="Train ECAPA-TDNN.")
    # Every rank logs to the console (msrun / the launch scripts keep one log per rank); rank 0 also to
    # <output_dir>/train.log once the run has been checked (src/train/loop.py).
    setup_logging()
    target = setup_device(cfg.device_target, cfg.device_id)
    rank = init_data_parallel(cfg.distributed)
    train(cfg, rank, target)
    return 0


if __name__ == "__main__":
    run_command(main)

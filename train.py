"""Train ECAPA-TDNN speaker embeddings (AAM-softmax on speaker classes) on a VoxCeleb-style folder.

    python train.py [--config configs/ecapa-tdnn_config.yaml] [--device_target Ascend|GPU|CPU] [--key value ...]
    python train.py --config configs/demo_config.yaml --resume          # continue from the newest checkpoint
    python train.py ... --resume runs/x/checkpoints/ckpt_step00002000.ckpt

Writes into output_dir: config.yaml (the resolved recipe), train.log, train_log.jsonl (JSON lines: loss,
accuracy, learning rate, samples/s) and checkpoints/ckpt_step<N>.ckpt (network, classifier, optimizer, data
position). Data-parallel runs are started by scripts/run_distribute_train_*.sh.
"""
import logging
import os
import sys

from src.checkpoint import resume_flag_to_value
from src.config import load_config
from src.device import setup_device
from src.distributed import device_id_for_process, init_data_parallel
from src.trainer import train


def setup_logging(output_dir, is_main):
    """INFO to the console on every rank (msrun / the launch scripts keep one log per rank) and, on rank 0 only,
    to <output_dir>/train.log."""
    handlers = [logging.StreamHandler()]
    if is_main:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log")))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv=None):
    argv = resume_flag_to_value(sys.argv[1:] if argv is None else argv)
    cfg = load_config(argv, description="Train ECAPA-TDNN.")
    target = setup_device(cfg.device_target, device_id_for_process(cfg.device_id))
    rank = init_data_parallel(cfg.distributed)
    setup_logging(cfg.output_dir, rank.is_main)
    return train(cfg, rank, target)


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as err:    # a bad recipe, folder, list or checkpoint: the message names it
        logging.getLogger("train").error("%s", err)
        sys.exit(1)

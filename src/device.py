"""Select the device and execution mode once, at the start of every entry point."""
import os

import mindspore as ms


def setup_device(device_target="CPU", device_id=0, graph_mode=True):
    """Run on ``device_target`` ("Ascend", "GPU" or "CPU") in GRAPH mode (PYNATIVE if ``graph_mode`` is False).

    The device is the DEVICE_ID environment variable when set (the launch scripts set one per rank), else
    ``device_id`` (the recipe's). Returns the normalised target name.
    """
    target = str(device_target).upper() if str(device_target).lower() != "ascend" else "Ascend"
    if target not in ("Ascend", "GPU", "CPU"):
        raise ValueError(f"device_target: expected Ascend, GPU or CPU, got '{device_target}'")
    device_id = int(os.environ.get("DEVICE_ID", device_id if device_id is not None else 0))
    ms.set_context(mode=ms.GRAPH_MODE if graph_mode else ms.PYNATIVE_MODE)
    ms.set_device(target, device_id)
    return target

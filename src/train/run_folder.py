"""The output folder of a training run: checked before anything is written, locked while a run writes into it, and
the stop requests (Ctrl-C, SIGTERM) that end a run at a step boundary.

Rules (``check_output_dir``): the folder may not be a file; a fresh run (no resume) is refused when the folder
already holds an earlier run's checkpoints or logs, so nothing of that run is overwritten or appended to.
``RunLock`` writes ``<output_dir>/train.lock`` holding the owner's PID and host; a second run into the same folder
is refused naming that PID while the owner lives (a lock left by a dead process is taken over with a warning).
"""
import logging
import os
import signal
import socket

from src.checkpoint import list_checkpoints

logger = logging.getLogger(__name__)


class OutputDirBusy(ValueError):
    """Another run is writing into the output folder."""

LOCK_FILE = "train.lock"
RUN_FILES = ("train_log.jsonl", "train.log")      # written by every run; a fresh run must not append to them


def check_output_dir(output_dir, checkpoint_dir, resuming):
    """Refuse an output folder a run cannot (or must not) write into; writes nothing."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(f"output_dir: {output_dir} is a file, not a folder")
    if resuming:
        return
    if list_checkpoints(checkpoint_dir):
        # A fresh run would mix its checkpoints with the old ones (and keep-last-K would delete the new ones).
        raise ValueError(f"output_dir: {checkpoint_dir} already holds checkpoints of an earlier run; continue it "
                         f"with --resume (latest) or --resume PATH, or choose another --output_dir")
    logs = [name for name in RUN_FILES if os.path.exists(os.path.join(output_dir, name))]
    if logs:
        raise ValueError(f"output_dir: {output_dir} already holds the logs of an earlier run ({', '.join(logs)}); "
                         f"choose another --output_dir, or delete them to start afresh there")


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # alive, owned by someone else
        return True
    return True


class RunLock:
    """``with RunLock(output_dir):`` -> the folder is this process's until the block ends."""

    def __init__(self, output_dir):
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.owner = f"{os.getpid()} {socket.gethostname()}"

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_take_over()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner + "\n")
            return self

    def _refuse_or_take_over(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                pid_text, _, host = f.read().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            pid, host = None, ""
        if pid is not None and host == socket.gethostname() and _process_alive(pid):
            raise OutputDirBusy(f"output_dir: another training run (pid {pid}) is writing into "
                               f"{os.path.dirname(self.path)} ({self.path}); wait for it to end or choose another "
                               f"--output_dir")
        if pid is not None and host != socket.gethostname():
            raise OutputDirBusy(f"output_dir: {self.path} says a run on host {host} (pid {pid}) is writing there; "
                               f"delete the file if that run has ended")
        logger.warning("%s was left by a run that has ended (pid %s); taking it over", self.path, pid)
        os.remove(self.path)

    def __exit__(self, *exc):
        if os.path.exists(self.path):
            os.remove(self.path)
        return False


class TrainingStopped(KeyboardInterrupt):
    """Training ended on request (Ctrl-C / SIGTERM) after saving a checkpoint; the message says where."""


class StopRequests:
    """``with StopRequests() as stop:`` -> ``stop.requested`` names the first SIGINT or SIGTERM received (the loop
    then saves and ends at the next step boundary); a second signal stops at once (KeyboardInterrupt). While
    MindSpore's dataset workers run, a Ctrl-C reaches this process as SIGTERM (MindSpore's own SIGINT handler
    forwards it), so the name can say SIGTERM for a Ctrl-C."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = None         # the name of the signal received, or None
        self.previous = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped at once, without a checkpoint")
        self.requested = signal.Signals(signum).name
        logger.warning("%s received: saving a checkpoint after this step, then stopping (send it again to stop at "
                       "once)", self.requested)

    def __enter__(self):
        for sig in self.SIGNALS:
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def watch(self):
        """Take the signals back: MindSpore's dataset pipeline installs its own C-level SIGINT handler when it starts
        its workers (which Python's signal.getsignal does not see); cheap enough to call every step."""
        for sig in self.SIGNALS:
            signal.signal(sig, self._handle)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False

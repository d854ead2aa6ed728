"""How every command-line entry point starts and ends.

Each entry point is ``main(argv) -> exit status`` run by ``run_command(main)``:

- MindSpore's own log goes to files (src/mindspore_log.py; entry points that load MindSpore on import call
  ``route_mindspore_log`` before their imports too);
- logging goes to the console (and a log file when the command names one, ``setup_logging``);
- a problem the user can fix (a bad value, file, list, trial list, checkpoint, audio file: ``ValueError`` or
  ``OSError``, whose messages name the culprit) ends with one line ``error: <message>`` on stderr and exit status 1,
  no traceback (``ECAPA_TRACEBACK=1`` shows it);
- a command line that cannot be parsed ends with exit status 2 (``UsageError``, or argparse's own message);
- Ctrl-C ends with exit status 130 and one line (training first saves a checkpoint, src/train/run_folder.py).
"""
import logging
import os
import sys

from src.config import UsageError
from src.mindspore_log import route_mindspore_log

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file=None):
    """INFO to the console and, when ``log_file`` is given, to that file too (its folder is created). Replaces the
    handlers an earlier call added, and only those."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "added_by_setup_logging", False)]:
        root.removeHandler(handler)
        handler.close()
    console = logging.StreamHandler()
    console.added_by_setup_logging = True
    console.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(console)
    root.setLevel(logging.INFO)
    if log_file:
        log_to_file(log_file)


def log_to_file(log_file):
    """Also send the log to ``log_file`` (appended; its folder is created), besides what setup_logging set up."""
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.added_by_setup_logging = True
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)


def run_command(main, argv=None):
    """Run ``main(argv)`` and exit with its status, ending on errors as the module docstring says."""
    route_mindspore_log()
    try:
        status = main(argv)
    except UsageError as err:
        print(f"usage error: {err}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, OSError) as err:
        if os.environ.get("ECAPA_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as stop:
        print(f"interrupted: {stop}" if str(stop) else "interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)

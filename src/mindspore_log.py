"""Where MindSpore's own log goes: every command calls ``route_mindspore_log()`` at start-up, before MindSpore loads.

It sends MindSpore's own log to files: its warnings ("Some side effect nodes were eliminated by mistake", msrun's connection retries, ...) go to
``runs/mindspore_log/rank_<id>/logs/`` under the repository, its errors go there and to the console.
``ECAPA_MINDSPORE_LOG`` chooses: unset (that folder), a folder, or ``console`` (MindSpore's default: everything on
the console). It sets ``GLOG_logtostderr`` and ``GLOG_log_dir``; ``GLOG_stderrthreshold`` (default 3, errors) and
``GLOG_v`` (default 2, warnings and up are logged) are yours to change.

MindSpore's C++ logger reads these settings once, when its library loads, so an entry point calls
``route_mindspore_log()`` before its imports (``if __name__ == "__main__":`` at the top, so that importing the module
changes nothing); ``src.cli.run_command`` calls it again (a no-op then) for commands that load MindSpore later.
Called after MindSpore has loaded, the settings reach MindSpore's Python logger and child processes only.
"""
import os
import shlex
import sys

MINDSPORE_LOG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs", "mindspore_log")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")   # MindSpore's log levels 0..4


def mindspore_log_env():
    """The MindSpore log variables ECAPA_MINDSPORE_LOG asks for: a dict to set ({} for the console)."""
    target = os.environ.get("ECAPA_MINDSPORE_LOG", "")
    if target == "console":
        return {}
    folder = os.path.abspath(target or MINDSPORE_LOG_DIR)
    try:
        os.makedirs(folder, exist_ok=True)      # made here: MindSpore refuses to create one whose path has a space
    except OSError:
        return {}
    threshold = os.environ.get("GLOG_stderrthreshold", "3").strip().upper()
    threshold = str(LEVELS.index(threshold)) if threshold in LEVELS else threshold
    return {"GLOG_logtostderr": "0", "GLOG_log_dir": folder, "GLOG_stderrthreshold": threshold}


def shell_exports():
    """The same settings as shell commands, for a launcher that imports MindSpore itself (msrun)."""
    settings = mindspore_log_env()
    if not settings:
        return "unset GLOG_logtostderr GLOG_log_dir"
    return "export " + " ".join(f"{key}={shlex.quote(value)}" for key, value in settings.items())


class _ThresholdForCpp:
    """MindSpore 2.10 reads GLOG_stderrthreshold twice: its Python logger (os.environ) wants a number and refuses a
    name, its C++ logger (getenv, once, when ``mindspore._c_expression`` loads) wants a name and takes a number as
    WARNING. So the process environment holds the name until that library has loaded, then the number again
    (for child processes, whose Python logger reads it)."""

    def __init__(self, number):
        self.number = number
        os.putenv("GLOG_stderrthreshold", LEVELS[int(number)])
        sys.meta_path.insert(0, self)

    def find_spec(self, name, path=None, target=None):
        if "mindspore._c_expression" in sys.modules:
            os.putenv("GLOG_stderrthreshold", self.number)
            sys.meta_path.remove(self)
        return None                             # never finds a module itself


def route_mindspore_log():
    """Apply ``mindspore_log_env()`` to this process (os.environ, inherited by child processes). Idempotent."""
    if any(isinstance(hook, _ThresholdForCpp) for hook in sys.meta_path):
        return                                  # already routed, and MindSpore has not loaded since
    settings = mindspore_log_env()
    if not settings:
        os.environ.pop("GLOG_logtostderr", None)
        os.environ.pop("GLOG_log_dir", None)
        return
    os.environ.update(settings)
    already_loaded = "mindspore._c_expression" in sys.modules     # then only child processes see the settings
    if settings["GLOG_stderrthreshold"] in ("0", "1", "2", "3", "4") and not already_loaded:
        _ThresholdForCpp(settings["GLOG_stderrthreshold"])

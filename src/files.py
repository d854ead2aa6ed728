"""Writing result files so that a reader never sees half of one: write beside it, then rename over it."""
import os


def write_atomically(path, mode, write):
    """Call ``write(f)`` on ``path + '.tmp'`` opened with ``mode`` ("w": UTF-8 text, "wb": bytes), then rename it to
    ``path``. On any error ``path`` keeps what it held before and the temporary file is removed."""
    tmp = path + ".tmp"
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

"""``python -m src.calibrate``: the calibration command under its documented name; it lives in
src/evaluate/calibrate.py (beside verify)."""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

from src.cli import run_command
from src.evaluate.calibrate import main

if __name__ == "__main__":
    run_command(main)

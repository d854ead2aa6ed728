"""``python -m src.calibrate``: the calibration command under its documented name; it lives in
src/evaluate/calibrate.py (beside verify)."""
from src.cli import run_command
from src.evaluate.calibrate import main

if __name__ == "__main__":
    run_command(main)

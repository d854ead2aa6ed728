"""``python -m src.speakers ACTION ...``: see src/speakers/command.py."""
from src.cli import run_command
from src.speakers.command import main

run_command(main)

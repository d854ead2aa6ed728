"""``python -m src.speakers ACTION ...``: see src/speakers/command.py."""
from src.mindspore_log import route_mindspore_log

if __name__ == "__main__":
    route_mindspore_log()       # first: MindSpore's C++ logger reads its settings when the imports below load it

from src.cli import run_command
from src.speakers.command import main

run_command(main)

"""Benchmark figures as JSON beside the printed tables: what was measured, by which command, when and on which machine.

Every benchmark takes ``--json PATH`` (default ``runs/benchmarks/<script>.json`` under the repository) and writes::

    {"benchmark": "bench_model", "command": "python benchmarks/bench_model.py --rounds 3",
     "date": "2026-12-02T14:03:11Z", "machine": {"cpu": "...", "cores": 2, "platform": "..."},
     "settings": {...the parsed options...}, "results": {...the figures of the printed tables...}}

The file is written atomically (src/files.py), so an interrupted benchmark leaves the previous one as it was.
"""
import datetime
import json
import os
import platform
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_json_path(script):
    """``runs/benchmarks/<name>.json`` under the repository for the benchmark file ``script`` (``__file__``)."""
    name = os.path.splitext(os.path.basename(script))[0]
    return os.path.join(ROOT, "runs", "benchmarks", f"{name}.json")


def add_json_option(parser, script):
    """Add ``--json PATH`` to a benchmark's argument parser."""
    parser.add_argument("--json", default=default_json_path(script),
                        help="where to write the figures as JSON (default: runs/benchmarks/<benchmark>.json)")


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (the platform's processor string where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_report(path, script, settings, results, argv=None):
    """Write the JSON report of one benchmark run to ``path`` and say so on the console.

    settings: the parsed options (a dict; the ``json`` path itself is left out); results: the figures (a dict of
    JSON types, the same numbers the printed tables show); argv: the command-line arguments (default sys.argv)."""
    sys.path.insert(0, ROOT)
    from src.files import write_atomically
    report = {
        "benchmark": os.path.splitext(os.path.basename(script))[0],
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(script, ROOT)]
                                            + list(sys.argv[1:] if argv is None else argv)),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "load_average": list(os.getloadavg())},   # above 0 before the run: other jobs shared the machine
        "settings": {k: v for k, v in settings.items() if k != "json"},
        "results": results,
    }
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    write_atomically(path, "w", lambda f: json.dump(report, f, indent=1, default=str))
    print(f"figures written to {path}", flush=True)
    return report

"""Benchmark sides in their own processes, each timed alone on the machine.

A benchmark script is the parent: it imports no framework and starts one worker process per side (the same script
with ``--worker SIDE``). Only the side being timed runs: the parent stops every other worker (SIGSTOP), so no
other framework's thread pool spins on the cores meanwhile. The sides take turns in alternating order over several
rounds (A B, B A, A B, ...) so that a drift of the shared machine's load hits each side alike, and the parent
prints medians with their spread.

Worker protocol: one JSON request per line on stdin, one JSON reply per line on the worker's original stdout (a
library's own prints go to stderr). A request the worker fails on gets ``{"error": ...}``, raised in the parent.
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback


class Side:
    """One worker process: ``Side(name, argv)`` starts it, ``ask(**request)`` -> its reply dict. Between requests
    the worker is stopped. Use it in a ``with`` block (or an ExitStack): leaving it ends the process, also when the
    parent fails."""

    def __init__(self, name, argv):
        self.name = name
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **request):
        os.kill(self.process.pid, signal.SIGCONT)
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark side {self.name} exited with code {self.process.wait()} "
                               f"(its error is printed above)")
        os.kill(self.process.pid, signal.SIGSTOP)
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"benchmark side {self.name}: {reply['error']}")
        return reply

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def worker_command(script, side, *args):
    """argv that starts ``script`` as the worker of ``side`` (extra ``args`` are passed on)."""
    return [sys.executable, os.path.abspath(script), "--worker", side, *map(str, args)]


def int_list(text):
    """'512,1024' -> [512, 1024] (a comma-separated command-line option)."""
    return [int(c) for c in text.split(",")]


def pin_threads(threads):
    """Keep this process on its first ``threads`` CPUs (call before a framework starts its thread pool)."""
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cpus[:threads])


def serve(handle):
    """A worker's main loop: answer each request line with ``handle(request)`` (a JSON-able dict) until stdin
    closes."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)                              # prints of the frameworks go to stderr
    for line in sys.stdin:
        try:
            reply = handle(json.loads(line))
        except Exception as err:   # noqa: BLE001 (any failure is reported to the parent, which raises it)
            traceback.print_exc()
            reply = {"error": f"{type(err).__name__}: {err}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def timed_runs(fn, repeats):
    """Call ``fn()`` ``repeats`` times -> list of wall times in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def take_turns(sides, rounds, request):
    """``rounds`` rounds, the sides' order alternating each round, each side asked ``request`` (a dict) and replying
    ``{"times": {measurement: [seconds, ...]}}`` -> {(side name, measurement): all its times}."""
    times = {}
    for r in range(rounds):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            for measurement, values in side.ask(**request)["times"].items():
                times.setdefault((side.name, measurement), []).extend(values)
    return times


def spread(times, scale=1e3):
    """'median [min-max]' of ``times`` (seconds) in ms (``scale`` 1e3)."""
    return (f"{statistics.median(times) * scale:.0f} "
            f"[{min(times) * scale:.0f}-{max(times) * scale:.0f}]")

"""Speaker-store scale: enrolment throughput, identify latency and memory of the SQLite and Milvus backends.

For each backend and each store size N, a fresh worker process (benchmarks/sides.py; one backend at a time on the
machine) enrols N random profiles (``--dim`` 192, one clip each, as ``Enrolment``s of src/speakers/store.py) in
batches of ``--batch`` speakers per ``enroll`` call, then:

- ``bulk enrol /s``: speakers enrolled per second over the whole load;
- ``one enrol ms``: median time of ``--single`` more enrolments of one speaker each (one ``enroll`` call each: what
  ``python -m src.speakers enroll`` does after embedding);
- ``open + first identify s``: the store closed, reopened and searched once (SQLite reads every profile into
  memory here; Milvus loads its collections);
- ``identify ms``: median and 99th percentile of ``--queries`` single-clip searches (top 5) on the open store;
- ``RSS MB``: the worker's resident memory after the searches, and its peak (milvus-lite runs Milvus inside the
  worker, so its memory is counted there; against a Milvus server it would be the server's).

The Milvus side runs milvus-lite (a local ``.db`` path), the embedded engine; a Milvus server is another program with
other figures. ``--milvus_index HNSW`` indexes its profiles approximately instead of the exact ``FLAT``. Stores are written below ``--work`` (deleted before each run). The table is printed and the figures
are written as JSON (``--json PATH``, default runs/benchmarks/bench_identify.json: benchmark, command, date, machine,
settings, results), rewritten after every store size so a long run keeps what it measured.

    .venv/bin/python benchmarks/bench_identify.py                                     # N = 1e3, 1e5, 1e6
    .venv/bin/python benchmarks/bench_identify.py --sizes 1000,100000 --backends sqlite,milvus
    .venv/bin/python benchmarks/bench_identify.py --sizes 1000 --queries 20 --single 5    # smoke run
"""
import argparse
import os
import shutil
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.report import add_json_option, write_report  # noqa: E402
from benchmarks.sides import Side, int_list, serve, worker_command  # noqa: E402

IDENTITY = {"benchmark": "random profiles"}


def memory_mb():
    """(resident, peak resident) memory of this process in MB, from /proc/self/status."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status", encoding="ascii"))
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def store_location(work, backend, n):
    return os.path.join(work, f"{backend}_{n}.db")


def worker(args):
    from src.speakers.profiles import Clip, Enrolment
    from src.speakers.store import open_store

    def random_enrolments(rng, prefix, count):
        vectors = rng.normal(size=(count, args.dim)).astype(np.float32)
        return [Enrolment(f"{prefix}{i}", v, [Clip(f"{prefix}{i}.wav", v, 3.0)], 3.0, 0.0)
                for i, v in enumerate(vectors)]

    def handle(request):
        n, where = request["n"], store_location(args.work, args.worker, request["n"])
        rng = np.random.default_rng(n)
        store = open_store(args.worker, where, IDENTITY, create=True, milvus_index=args.milvus_index)
        start = time.perf_counter()
        for first in range(0, n, args.batch):
            store.enroll(random_enrolments(rng, f"s{first}_", min(args.batch, n - first)))
        bulk = time.perf_counter() - start
        single = []
        for i in range(args.single):
            one = random_enrolments(rng, f"extra{i}_", 1)
            start = time.perf_counter()
            store.enroll(one)
            single.append(time.perf_counter() - start)
        store.close()
        start = time.perf_counter()
        store = open_store(args.worker, where, IDENTITY)
        store.search(rng.normal(size=(1, args.dim)), 5)
        cold = time.perf_counter() - start
        latencies = []
        for _ in range(args.queries):
            query = rng.normal(size=(1, args.dim)).astype(np.float32)
            start = time.perf_counter()
            store.search(query, 5)
            latencies.append(time.perf_counter() - start)
        rss, peak = memory_mb()
        store.close()
        return {"n": n, "bulk_seconds": bulk, "bulk_per_second": n / bulk,
                "one_enrol_ms": 1e3 * statistics.median(single),
                "open_first_identify_seconds": cold, "identify_ms_median": 1e3 * statistics.median(latencies),
                "identify_ms_p99": 1e3 * float(np.percentile(latencies, 99)), "rss_mb": rss, "peak_rss_mb": peak,
                "queries": args.queries}

    serve(handle)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int_list, default=[1000, 100000, 1000000], help="store sizes N")
    parser.add_argument("--backends", default="sqlite,milvus", help="comma-separated: sqlite, milvus")
    parser.add_argument("--dim", type=int, default=192, help="embedding size")
    parser.add_argument("--batch", type=int, default=10000, help="speakers per enroll call in the bulk load")
    parser.add_argument("--single", type=int, default=20, help="single-speaker enrolments timed")
    parser.add_argument("--queries", type=int, default=200, help="single-clip searches timed")
    parser.add_argument("--milvus_index", default="FLAT", choices=("FLAT", "HNSW"),
                        help="index of the Milvus profiles (FLAT: exact, as SQLite; HNSW: approximate)")
    parser.add_argument("--work", default="/tmp/bench_identify", help="folder of the stores (emptied first)")
    add_json_option(parser, __file__)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    backends = args.backends.split(",")
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    passed = list(argv if argv is not None else sys.argv[1:])
    results = []
    print(f"random {args.dim}-dim profiles, bulk batches of {args.batch}, top-5 searches of one clip", flush=True)
    for n in args.sizes:
        for backend in backends:
            with Side(backend, worker_command(__file__, backend, *passed)) as side:
                start = time.perf_counter()
                figures = dict(side.ask(n=n), backend=backend)
            print(f"{backend} N={n}: done in {time.perf_counter() - start:.0f} s", flush=True)
            results.append(figures)
            path = store_location(args.work, backend, n)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
            write_report(args.json, __file__, {k: v for k, v in vars(args).items() if k != "worker"},
                         {"runs": results}, argv=passed)
    print("\n| backend | N | bulk enrol /s | one enrol ms | open + first identify s | identify ms median | "
          "identify ms p99 | RSS MB (peak) |\n|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backend']} | {r['n']:,} | {r['bulk_per_second']:,.0f} | {r['one_enrol_ms']:.1f} | "
              f"{r['open_first_identify_seconds']:.2f} | {r['identify_ms_median']:.2f} | {r['identify_ms_p99']:.2f} | "
              f"{r['rss_mb']:.0f} ({r['peak_rss_mb']:.0f}) |")


if __name__ == "__main__":
    main()

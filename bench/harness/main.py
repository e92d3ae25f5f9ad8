"""tlstap benchmark suite (issue 8): overhead A/B, throughput, startup, analysis, memory, BPF cost.

Run it through bench/run (as root). Python 3 standard library only; the child processes are
tlstap, the Go fixture (server and client), hey, bpftool, gcc (for the malloc counter) and, once,
apt-get download for the large stripped Go binaries. Writes bench/results/latest.{txt,json} and
the generated part of BENCHMARKS.md (between its bench markers). Benchmarks measure: nothing here
fails on a timing; a goal that is not reached is reported with the measurement that bounds it.
"""

import argparse
import atexit
import os
import shutil
import signal
import sys
import time

from . import common
from .base import BaseBench
from .common import HERE, log
from .fallbacks import FallbacksMixin
from .fast import FastMixin
from .httpview import HttpViewMixin
from .overhead import OverheadMixin
from .pinned import PinnedMixin
from .procfs import PROCS
from .profiling import ProfilingMixin
from .report import ReportMixin
from .startup import StartupMixin
from .throughput import ThroughputMixin


class Bench(BaseBench, OverheadMixin, PinnedMixin, ProfilingMixin, ThroughputMixin, StartupMixin, FallbacksMixin,
            HttpViewMixin, FastMixin, ReportMixin):
    """One benchmark run: setup and primitives (base), the four measurements, the report."""


def main():
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=16, help="overhead A/B rounds, unpinned and pinned (default 16: single rounds vary by ±10 %% on this shared VM)")
    ap.add_argument("--requests", type=int, default=20000, help="hey -n (default 20000)")
    ap.add_argument("--fast-requests", type=int, default=60000,
                    help="hey -n of the fast-server A/B (default 60000: runs of 2-4 s; 1 s runs vary by ±30 %%)")
    ap.add_argument("--concurrency", type=int, default=32, help="hey -c (default 32)")
    ap.add_argument("--tp-rounds", type=int, default=3, help="throughput rounds (default 3)")
    ap.add_argument("--tp-requests-1m", type=int, default=50)
    ap.add_argument("--tp-requests-8m", type=int, default=10)
    ap.add_argument("--tp-hey-requests-1m", type=int, default=128)
    ap.add_argument("--tp-hey-requests-8m", type=int, default=16)
    ap.add_argument("--tp-hey-conns", type=int, default=4)
    ap.add_argument("--startup-reps", type=int, default=5)
    ap.add_argument("--only", default="overhead,pinned,throughput,startup,fallbacks,httpview,fast",
                    help="comma list of sections (fallbacks, httpview or fast alone rewrite only their own part of BENCHMARKS.md)")
    ap.add_argument("--go", default="1.27", help="Go version of the fixture (default 1.27)")
    ap.add_argument("--tlstap", help="use this tlstap binary (no cargo build)")
    ap.add_argument("--no-build", action="store_true", help="use target/release/tlstap as it is")
    ap.add_argument("--no-write", action="store_true", help="print the report instead of writing BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true", help="smoke test (about 1 min): 1 round, 2000 requests, 1 rep; "
                    "writes bench/results/quick.{txt,json,md}, never BENCHMARKS.md")
    a = ap.parse_args()
    a.argv = sys.argv[1:]
    if a.quick:
        a.rounds, a.requests, a.fast_requests, a.tp_rounds, a.startup_reps = 1, 2000, 2000, 1, 1
        a.tp_requests_1m, a.tp_requests_8m, a.tp_hey_requests_1m, a.tp_hey_requests_8m = 10, 2, 16, 4
    if os.geteuid() != 0:
        sys.exit("bench/run: needs root (BPF)")
    for tool in ("hey", "bpftool", "gcc", "file", "strip", "/usr/bin/time"):
        if not shutil.which(tool):
            sys.exit(f"bench/run: needs {tool} (apt-get install {os.path.basename(tool)})")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    if a.quick:
        a.no_write = True  # a smoke test never replaces the published numbers
    # A fallbacks-only run keeps its raw results apart: latest.* hold the last full run's.
    a.stem = "quick" if a.quick else a.only if a.only in ("fallbacks", "httpview", "fast") else "latest"
    common.LOG = open(os.path.join(HERE, "results", a.stem + ".txt"), "w")
    b = Bench(a)

    def on_signal(sig, frame):
        raise SystemExit(128 + sig)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    atexit.register(lambda: shutil.rmtree(b.wd, ignore_errors=True))
    atexit.register(PROCS.cleanup)  # runs first (atexit is LIFO)
    t0 = time.monotonic()
    b.build()
    b.machine()
    only = set(a.only.split(","))
    if "overhead" in only:
        b.overhead()
    if "pinned" in only:
        b.pinned()
    if "throughput" in only:
        b.throughput()
    if "startup" in only:
        b.startup()
    if "fallbacks" in only:
        b.fallbacks()
    if "httpview" in only:
        b.httpview()
    if "fast" in only:
        b.fast()
    b.res["runtime_s"] = time.monotonic() - t0
    log(f"== done in {b.res['runtime_s']/60:.1f} min")
    b.write()

"""Overhead with the server alone on a core: the server pinned to CPU 1, hey and tlstap to CPU 0.

Unpinned, hey, the server and tlstap share both cores, and hey's own Go runtime spends more CPU per
request when the server answers more slowly, so the req/s ratio mixes what tlstap adds to the
server with how hey reacts to it. Pinned, the server's core is the bottleneck: req/s follows the
server's CPU per request, and a perf profile of CPU 1, null probes against jsonl, shows what tlstap
adds on that core symbol by symbol (the BPF program and the kernel helpers it calls).
"""

import collections
import os
import re
import shutil
import signal
import subprocess
import time

from .common import log
from .procfs import PROCS, cpu_s
from .stats import f, med, spread

PIN_SERVER = ("taskset", "-c", "1")
PIN_OTHERS = ("taskset", "-c", "0")
PERF_HZ = 4999

# Kernel symbols that run only because a BPF program does (the program, the map, ring buffer and
# memory-read helpers, and the hardened-usercopy checks those reads make).
BPF_SYMBOL = re.compile(r"^(bpf_|htab_|__htab_|lookup_nulls_elem_raw|pcpu_freelist|copy_from_user_nofault|"
                        r"copy_from_kernel_nofault|__check_object_size|check_stack_object|__bpf_|"
                        r"bpf_prog_\w+|is_vmalloc_addr)")


class PinnedMixin:
    def pinned_run(self, cfg, rnd):
        """One hey run against a pinned server copy with tlstap (`null` or `jsonl`), CPU 1 profiled."""
        srv = self.copy_target(f"pin{rnd}-{cfg}")
        wd = os.path.dirname(srv)
        sp, addr = self.start_server(srv, prefix=PIN_SERVER)
        cap, data = os.path.join(wd, "cap.jsonl"), os.path.join(wd, "perf.data")
        argv = ["-e", srv, "--format", "jsonl", "-o", cap] + (["--null-probes"] if cfg == "null" else [])
        tp = pf = None
        row = {"cfg": cfg, "round": rnd}
        try:
            tp, _ = self.start_tlstap(argv, "record", out=cap, prefix=PIN_OTHERS)
            if shutil.which("perf"):
                pf = PROCS.spawn(["perf", "record", "-C", "1", "-F", str(PERF_HZ), "-o", data], stop_sig=signal.SIGINT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.3)  # perf attaches
            s0 = cpu_s(sp.pid)
            h = self.hey(addr, self.a.requests, self.a.concurrency, prefix=PIN_OTHERS)
            row["srv_cpu"] = cpu_s(sp.pid) - s0
            row.update({k: h[k] for k in ("rps", "ok")})
            if pf:
                PROCS.stop(pf, signal.SIGINT, timeout=60)
                pf = None
                row["samples"] = self.symbol_samples(data)
        finally:
            self.teardown(sp, tlstap=tp, perf=pf, workdir=wd)
        return row

    @staticmethod
    def symbol_samples(data):
        """{symbol: self samples} of a perf.data file."""
        out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "-n", "--sort", "symbol"],
                             capture_output=True, text=True).stdout
        samples = {}
        for line in out.splitlines():
            m = re.match(r"^\s+[\d.]+%\s+(\d+)\s+\[[.k]\]\s+(.+?)\s*$", line)
            if m:
                sym = re.sub(r"(\s+-)+$", "", m.group(2)).strip()  # perf pads with "-" columns off a tty
                samples[sym] = samples.get(sym, 0) + int(m.group(1))
        return samples

    def pinned(self):
        cfgs = ["null", "jsonl"]
        log(f"== overhead, server pinned to CPU 1 (hey and tlstap on CPU 0): {self.a.rounds} rounds x {cfgs}")
        rows = []
        for r in range(self.a.rounds):
            for cfg in (cfgs if r % 2 == 0 else cfgs[::-1]):
                row = self.pinned_run(cfg, r)
                rows.append(row)
                log(f"  round {r} {cfg:6s} {row['rps']:8.0f} req/s  ok {row['ok']}  server "
                    f"{row['srv_cpu'] / max(row['ok'], 1) * 1e6:.1f} µs/req")
        self.res["sections"]["pinned"] = {"rows": rows}


def us_per_request(rows):
    """{symbol: µs of CPU 1 per request}, summed over the runs."""
    total = collections.Counter()
    for r in rows:
        total.update(r.get("samples") or {})
    requests = sum(r["ok"] for r in rows) or 1
    return {sym: n / PERF_HZ / requests * 1e6 for sym, n in total.items()}


def pinned_report(sec, a):
    """Markdown lines and the goal row of the pinned section."""
    rows = sec["rows"]
    by = collections.defaultdict(list)
    for r in rows:
        by[r["cfg"]].append(r)
    null_rps = {r["round"]: r["rps"] for r in by["null"]}
    paired = [r["rps"] / null_rps[r["round"]] for r in by["jsonl"] if r["round"] in null_rps]
    ratio = med([r["rps"] for r in by["jsonl"]]) / med([r["rps"] for r in by["null"]])
    L = ["### Overhead with the server alone on a core (`taskset`: server on CPU 1, hey and tlstap on CPU 0)\n",
         f"{a.rounds} rounds of `hey -n {a.requests} -c {a.concurrency}`, null probes and jsonl alternating; CPU 1 "
         f"profiled by `perf record -C 1 -F {PERF_HZ}`. The server's core is the bottleneck here, so the ratio is what "
         "tlstap costs the server itself; unpinned (above), hey shares the cores and reacts to the server's speed.\n",
         "| config | req/s | vs null floor (paired) | server CPU µs/request | CPU 1 µs/request (perf) | of which BPF program and helpers |",
         "|---|---|---|---|---|---|"]
    per = {cfg: us_per_request(by[cfg]) for cfg in ("null", "jsonl")}
    bpf = {cfg: sum(v for s, v in per[cfg].items() if BPF_SYMBOL.match(s)) for cfg in per}
    for cfg in ("null", "jsonl"):
        rs = by[cfg]
        vs = "1.000 (1.000)" if cfg == "null" else f"{ratio:.3f} ({f(med(paired), '{:.3f}')})"
        L.append(f"| {cfg} | {spread([r['rps'] for r in rs])} | {vs} "
                 f"| {spread([r['srv_cpu'] / r['ok'] * 1e6 for r in rs if r['ok']], '{:.1f}')} "
                 f"| {sum(per[cfg].values()):.1f} | {bpf[cfg]:.1f} |")
    L.append("")
    extra = sorted(set(per["null"]) | set(per["jsonl"]),
                   key=lambda s: per["null"].get(s, 0) - per["jsonl"].get(s, 0))
    L.append("Where CPU 1 spends more per request with jsonl than with null probes (the 12 largest differences; "
             "sampling noise is about ±0.1 µs per symbol):\n")
    L.append("| symbol | null µs/request | jsonl µs/request | difference |")
    L.append("|---|---|---|---|")
    for s in extra[:12]:
        n, j = per["null"].get(s, 0), per["jsonl"].get(s, 0)
        L.append(f"| `{s[:80]}` | {n:.2f} | {j:.2f} | {j - n:+.2f} |")
    L.append("")
    floor = sum(per["null"].values())
    cost = bpf["jsonl"] - bpf["null"]
    goal = ("jsonl throughput ≥ 0.95 × null-probe floor, server alone on a core",
            f"{ratio:.3f} (paired {f(med(paired), '{:.3f}')}); BPF work {cost:.1f} µs on a {floor:.0f} µs request "
            f"= {floor / (floor + cost):.3f} expected", ratio >= 0.95,
            f"the BPF program and its helpers take {cost:.1f} µs of the server's core per request (profile above), "
            f"against a budget of {0.05 / 0.95 * floor:.1f} µs at this request cost")
    return L, goal

"""perf profiles: of tlstap's own process (overhead and throughput runs) and, system-wide, of the
traced server's kernel path (uprobe trap, BPF program, ring buffer wake-up)."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from .common import log
from .procfs import PROCS, cpu_s


class ProfilingMixin:
    def perf_start(self, pid):
        if not shutil.which("perf"):
            return None
        out = os.path.join(self.wd, f"perf-{pid}.data")
        p = PROCS.spawn(["perf", "record", "-F", "1999", "-o", out, "-p", str(pid)], stop_sig=signal.SIGINT,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # perf attaches
        p.out = out
        return p

    def perf_stop(self, p, top=8):
        """Top symbols by self samples of a `perf record -p` of tlstap: [(percent, dso, symbol)]."""
        if not p:
            return None
        PROCS.stop(p, signal.SIGINT, timeout=30)
        r = subprocess.run(["perf", "report", "-i", p.out, "--stdio", "--no-children", "--sort", "dso,symbol"],
                           capture_output=True, text=True)
        rows = []
        for line in r.stdout.splitlines():
            m = re.match(r"^\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.+?)\s*$", line)
            if m:
                rows.append((float(m.group(1)), m.group(2), re.sub(r"(\s+-)+$", "", m.group(3)).strip()))
        os.unlink(p.out)
        return rows[:top]

    def profiled_run(self, cfg, n):
        """A hey run (small requests) with tlstap under `perf record`: where tlstap's CPU goes."""
        srv = self.copy_target(f"prof-{cfg}")
        sp, addr = self.start_server(srv)
        cap = os.path.join(os.path.dirname(srv), "cap.jsonl")
        argv = ["-e", srv] + (["--format", "jsonl", "-o", cap] if cfg == "jsonl" else ["-o", "/dev/null"])
        tp = pf = None
        try:
            tp, _ = self.start_tlstap(argv, "record" if cfg == "jsonl" else ("link", srv), out=cap)
            pf = self.perf_start(tp.pid)
            self.hey(addr, n, self.a.concurrency)
            self.settle(tp.pid, quiet=0.2)
            top = self.perf_stop(pf)
            pf = None
        finally:
            self.teardown(sp, tlstap=tp, perf=pf, workdir=os.path.dirname(srv))
        log(f"  perf profile of tlstap ({cfg}, hey -n {n}): " + "; ".join(f"{p:.1f}% {sym[:60]}" for p, _, sym in (top or [])[:5]))
        return top

    KSYMS = [("uprobe trap entry (asm_exc_int3, everything under it)", r"asm_exc_int3"),
             ("uprobe handling on return to user (uprobe_notify_resume)", r"uprobe_notify_resume"),
             ("BPF program go_tls_multi (all it calls)", r"bpf_prog_\w+_go_tls_multi"),
             ("  bpf_ringbuf_submit", r"bpf_ringbuf_submit"),
             ("    irq_work_queue (consumer wake-up)", r"irq_work_queue"),
             ("    arch_irq_work_raise (self-IPI)", r"arch_irq_work_raise"),
             ("  bpf_probe_read_user (payload copy)", r"bpf_probe_read_user"),
             ("  bpf_probe_read_kernel", r"bpf_probe_read_kernel")]

    def kernel_profile(self, n):
        """System-wide `perf record -a -g` during a jsonl hey run: the traced server's samples in
        the uprobe path and the BPF program, as shares of all its samples."""
        if not shutil.which("perf"):
            return None
        d = tempfile.mkdtemp(prefix="kprof-", dir=self.wd)
        comm = "tlsbsrv%d" % (os.getpid() % 10000)
        srv = os.path.join(d, comm)
        shutil.copy2(self.fixture, srv)
        sp, addr = self.start_server(srv)
        cap, data = os.path.join(d, "cap.jsonl"), os.path.join(d, "perf.data")
        tp = pf = None
        try:
            tp, _ = self.start_tlstap(["-e", srv, "--format", "jsonl", "-o", cap], "record", out=cap)
            pf = PROCS.spawn(["perf", "record", "-a", "-g", "-F", "2999", "-o", data], stop_sig=signal.SIGINT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            s0 = cpu_s(sp.pid)
            h = self.hey(addr, n, self.a.concurrency)
            srv_us = (cpu_s(sp.pid) - s0) / max(h["ok"], 1) * 1e6
            PROCS.stop(pf, signal.SIGINT, timeout=60)
            pf = None
        finally:
            self.teardown(sp, tlstap=tp, perf=pf)
        r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "comm", "-g", "none"],
                           capture_output=True, text=True).stdout
        m = re.search(r"^\s+([\d.]+)%\s+" + comm + r"\s*$", r, re.M)
        share = float(m.group(1)) if m else None
        r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--children", "--sort", "symbol", "--comm", comm,
                            "-g", "none"], capture_output=True, text=True).stdout
        shutil.rmtree(d, ignore_errors=True)
        if not share:
            return None
        rows = []
        for label, rx in self.KSYMS:
            m = re.search(r"^\s+([\d.]+)%\s+[\d.]+%\s+\[k\]\s+" + rx + r"\b", r, re.M)
            pct = float(m.group(1)) / share if m else 0.0
            rows.append({"what": label, "share": pct, "us_per_req": pct * srv_us})
        out = {"requests": h["ok"], "rps": h["rps"], "server_us_per_req": srv_us, "rows": rows}
        log(f"  kernel profile of the traced server (jsonl, hey -n {n}, {srv_us:.0f} µs CPU/request): " +
            "; ".join(f"{x['what'].strip()} {x['share']*100:.1f}% ({x['us_per_req']:.1f} µs)" for x in rows))
        return out

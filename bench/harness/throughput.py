"""2. Throughput: 1 and 8 MiB bodies through a traced server (fixture client or hey against
bench/tlsbench), untraced / null probes / jsonl."""

import json
import os
import re
import subprocess
import time

from .common import NONCE, log
from .procfs import PROCS, cpu_s, ru_cpu


class ThroughputMixin:
    # -- 2. throughput
    def throughput(self):
        cfgs = ["untraced", "null", "jsonl"]
        drivers = [("fixture", [(1 << 20, self.a.tp_requests_1m), (8 << 20, self.a.tp_requests_8m)]),
                   ("hey", [(1 << 20, self.a.tp_hey_requests_1m), (8 << 20, self.a.tp_hey_requests_8m)])]
        log(f"== throughput: {self.a.tp_rounds} rounds x (fixture client -> fixture server, hey -c 4 -> tlsbench server)"
            f" x sizes 1/8 MiB x write-chunk -1/0 x {cfgs}")
        rows = []
        for r in range(self.a.tp_rounds):
            for driver, cases in drivers:
                for size, nreq in cases:
                    for chunk in (-1, 0):
                        order = cfgs[r % 3:] + cfgs[:r % 3]
                        for cfg in order:
                            row = self.tp_run(cfg, size, nreq, chunk, driver)
                            row["round"] = r
                            rows.append(row)
                            log(f"  round {r} {driver:7s} {size>>20}MiB x{nreq} chunk {chunk:2d} {cfg:8s} target {row['mbps']:7.1f} MB/s"
                                + (f"  captured {row['cap_mbps']:7.1f} MB/s ({row['captured_bytes']/1e6:.0f} MB, "
                                   f"drain {row['drain_s']:.2f}s) lost {row['lost']} {row.get('lost_by_cause') or ''}" if cfg == "jsonl" else "")
                                + f"  cpu%: client {row['client_pct']:.0f} server {row['srv_pct']:.0f}"
                                + (f" tlstap {row['tlstap_pct']:.0f}" if cfg != "untraced" else "")
                                + (f"  ! {row['ok']}/{nreq} ok" if row.get("ok") != nreq else ""))
        # The hey runs saturate both cores, so tlstap's consumer waits for CPU: the same runs with
        # tlstap at a higher priority (nice -10) show what it needs to keep up, and what it costs.
        priority = []
        for r in range(self.a.tp_rounds):
            for size, nreq in drivers[1][1]:
                for nice in (0, -10):
                    row = self.tp_run("jsonl", size, nreq, 0, "hey", nice=nice)
                    row["round"] = r
                    priority.append(row)
                    log(f"  round {r} hey {size>>20}MiB x{nreq} jsonl nice {nice:3d}: target {row['mbps']:7.1f} MB/s captured "
                        f"{row['cap_mbps']:7.1f} MB/s tlstap {row['tlstap_pct']:.0f}% lost {row['lost']}")
        prof = self.tp_run("jsonl", 8 << 20, self.a.tp_hey_requests_8m, 0, "hey", profile=True)
        log(f"  perf profile of tlstap (jsonl, hey 8 MiB x{self.a.tp_hey_requests_8m}; lost {prof['lost']} "
            f"{prof.get('lost_by_cause') or ''}): " + "; ".join(f"{p:.1f}% {sym[:60]}" for p, _, sym in (prof.get('profile') or [])[:5]))
        self.res["sections"]["throughput"] = {"rows": rows, "profile": prof, "priority": priority}

    @staticmethod
    def renice(pid, nice):
        """Raises tlstap's priority the way that works here: its thread's nice value (it reads the
        ring on its main thread) and, since every process of this harness leads its own session
        and the kernel may schedule sessions as groups (autogroup), its session's nice value."""
        os.setpriority(os.PRIO_PROCESS, pid, nice)
        try:
            with open(f"/proc/{pid}/autogroup", "w") as fh:
                fh.write(str(nice))
        except OSError:
            pass  # no autogroup support: the thread's nice value is all there is

    def tp_run(self, cfg, size, nreq, chunk, driver, profile=False, nice=0):
        srv = self.copy_target(f"tp-{cfg}", None if driver == "fixture" else self.tlsbench)
        sp, addr = self.start_server(srv)
        cap = os.path.join(os.path.dirname(srv), "cap.jsonl")
        tp = None
        row = {"cfg": cfg, "size": size, "requests": nreq, "chunk": chunk, "driver": driver, "nice": nice}
        try:
            if cfg != "untraced":
                argv = ["-e", srv, "--format", "jsonl", "-o", cap] + (["--null-probes"] if cfg == "null" else [])
                tp, _ = self.start_tlstap(argv, "record", out=cap)
                if nice:
                    self.renice(tp.pid, nice)
                t_cpu0 = cpu_s(tp.pid)
            if driver == "hey":
                body = os.path.join(self.wd, f"body-{size}")
                if not os.path.exists(body):
                    with open(body, "wb") as fh:
                        fh.write(NONCE.encode() + os.urandom(size - len(NONCE)))
                argv = ["hey", "-n", str(nreq), "-c", str(self.a.tp_hey_conns), "-m", "POST", "-H", f"X-Nonce: {NONCE}",
                        "-D", body, f"https://{addr}/echo?size={size}&chunk={chunk}"]
            else:
                argv = [self.fixture, "client", "--addr", addr, "--manifest", "/dev/null", "--requests",
                        str(nreq), "--sizes", str(size), "--write-chunk", str(chunk)]
            pf = self.perf_start(tp.pid) if profile else None
            s0 = cpu_s(sp.pid)
            t0 = time.monotonic()
            cl = PROCS.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            cl_out = cl.stdout.read().decode(errors="replace")
            rc, ru = PROCS.reap(cl, 600) or (None, None)
            t1 = time.monotonic()
            if rc != 0:
                log(f"  ! client exit {rc}: {cl_out[-300:]!r}")
            if driver == "hey":
                m = re.search(r"\[200\]\s+(\d+) responses", cl_out)
                row["ok"] = int(m.group(1)) if m else 0
            else:
                row["ok"] = nreq if rc == 0 else 0
            wall = t1 - t0
            row["wall_s"] = wall
            row["srv_pct"] = 100 * (cpu_s(sp.pid) - s0) / wall
            row["client_pct"] = 100 * ru_cpu(ru) / wall
            payload = 2 * nreq * size  # request and response bodies, as the server reads and writes them
            row["payload_bytes"] = payload
            row["mbps"] = payload / wall / 1e6
            if tp:
                t_cpu_client_end = cpu_s(tp.pid)
                t_done = self.settle(tp.pid, quiet=0.3)
                row["tlstap_pct"] = 100 * (t_cpu_client_end - t_cpu0) / wall
                row["drain_s"] = max(0.0, t_done - t1)
                row["tlstap_cpu"] = cpu_s(tp.pid) - t_cpu0
                if pf:
                    row["profile"] = self.perf_stop(pf)
                rcode, ru2, summ, _ = self.stop_tlstap(tp)
                tp = None
                row["lost"] = summ["lost"] if summ else None
                row["captured_bytes"] = summ["bytes"] if summ else 0
                row["events"] = summ["events"] if summ else 0
                row["cap_mbps"] = row["captured_bytes"] / (wall + row["drain_s"]) / 1e6
                if cfg == "jsonl":
                    row["complete_bytes"] = row["captured_bytes"] / payload
                    row["lost_by_cause"] = self.last_stats(cap)
        finally:
            self.teardown(sp, tlstap=tp, workdir=os.path.dirname(srv))
        return row

    @staticmethod
    def last_stats(path):
        """lost_by_cause of the stats record that ends a JSONL capture (None if absent)."""
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - 4096))
            for line in reversed(fh.read().splitlines()):
                if line.startswith(b'{"type":"stats"'):
                    return {k: v for k, v in json.loads(line).get("lost_by_cause", {}).items() if v}
        return None

"""1. Overhead A/B: untraced, null probes, text and jsonl capture under hey, rotated per round;
the per-attach-point hit breakdown and the heap-call count of a capture."""

import base64
import collections
import json
import os
import re
import subprocess
import threading

from .common import NONCE, log
from .procfs import (BpfStats, UprobeCounters, bpfmap_rss_kb, cpu_s, prog_names, prog_stats, proc_io, ru_cpu,
                     status_kb)
from .stats import f, med


class OverheadMixin:
    # -- capture analysis
    @staticmethod
    def completeness(path, pid):
        """Responses (status line + nonce header) and requests found in the captured plaintext,
        each connection's writes and reads concatenated in capture order."""
        streams = collections.defaultdict(bytearray)
        stats, truncated, exchanges, undecodable = None, 0, 0, 0
        with open(path, "rb") as fh:
            for line in fh:
                if line.startswith(b'{"type":"data"'):
                    r = json.loads(line)
                    if r["pid"] != pid:
                        continue
                    truncated += r.get("truncated", False)
                    conn = (r.get("conn") or {}).get("id")
                    streams[(conn, r["direction"])] += base64.b64decode(r["data_b64"])
                elif line.startswith(b'{"type":"stats"'):
                    stats = json.loads(line)
                elif line.startswith(b'{"type":"http"'):
                    r = json.loads(line)
                    if r["pid"] == pid and r.get("status") == 200 and (r.get("path") or "").startswith("/echo"):
                        exchanges += 1
                        undecodable += bool(r.get("undecodable_fields"))
        resp = req = 0
        for (conn, d), data in streams.items():
            if d == "write":
                resp += min(data.count(b"HTTP/1.1 200 OK\r\n"), data.count(f"\r\nX-Nonce: {NONCE}\r\n".encode()))
            else:
                req += min(data.count(b"POST /echo?size=64 HTTP/1.1\r\n"), data.count(f"\r\nX-Nonce: {NONCE}\r\n".encode()))
        return {"responses": resp, "requests": req, "truncated": truncated, "stats": stats,
                "exchanges": exchanges, "undecodable": undecodable,
                "conns": len({c for c, _ in streams})}

    # -- 1. overhead A/B
    def overhead_run(self, cfg, rnd, extra=None, malloc=False, n=None, c=None, h2=False, server=None):
        """One hey run against a fresh server copy under `cfg` (`server`: another fixture than the
        default, `h2`: hey speaks HTTP/2); returns the measurements."""
        n, c = n or self.a.requests, c or self.a.concurrency
        srv = self.copy_target(f"ov{rnd}-{cfg}", src=server)
        sp, addr = self.start_server(srv)
        row = {"cfg": cfg, "round": rnd}
        tp = None
        cap = os.path.join(os.path.dirname(srv), "cap.jsonl")
        counts_path = None
        try:
            if cfg != "untraced":
                argv = ["-e", srv]
                env = None
                if cfg == "null":
                    argv += ["--null-probes", "--format", "jsonl", "-o", cap]
                elif cfg == "text":
                    argv += ["-o", "/dev/null"]
                elif cfg == "jsonl":
                    argv += ["--format", "jsonl", "-o", cap]
                argv += extra or []
                if malloc and self.malloc_so:
                    counts_path = os.path.join(os.path.dirname(srv), "malloc.counts")
                    with open(counts_path, "wb") as fh:
                        fh.write(b"\0" * 4096)
                    env = dict(os.environ, LD_PRELOAD=self.malloc_so, TLSTAP_BENCH_MALLOC_COUNTS=counts_path)
                tp, row["ready_s"] = self.start_tlstap(argv, ("link", srv) if cfg == "text" else "record",
                                                       out=cap, env=env)
                row["cpu_ready"] = cpu_s(tp.pid)
                row["hwm_ready_kb"] = status_kb(tp.pid).get("VmHWM")
                p0, io0 = prog_stats(tp.pid), proc_io(tp.pid)
                m0 = self.read_counts(counts_path)
            samples, stop_ev = [], threading.Event()

            def sampler():
                while not stop_ev.wait(0.25):
                    try:
                        s = status_kb(tp.pid)
                        samples.append((s.get("VmRSS"), s.get("RssAnon"), s.get("RssFile"), bpfmap_rss_kb(tp.pid)))
                    except OSError:
                        return
            th = threading.Thread(target=sampler, daemon=True)
            if tp:
                th.start()
            s0 = cpu_s(sp.pid)
            h = self.hey(addr, n, c, h2=h2)
            row["srv_cpu"] = cpu_s(sp.pid) - s0
            stop_ev.set()
            row.update({k: h[k] for k in ("rps", "secs", "ok", "errors", "cpu", "codes")})
            row["hey_cpu"] = row.pop("cpu")
            if h["raw_tail"]:
                log(f"  ! hey output: {h['raw_tail']!r}")
            if tp:
                th.join()
                # let the consumer drain (its CPU settles), then read the counters
                self.settle(tp.pid)
                p1, io1 = prog_stats(tp.pid), proc_io(tp.pid)
                m1 = self.read_counts(counts_path)
                names = prog_names(set(p1))
                progs = {}
                for pid_, s1 in p1.items():
                    s0_ = p0.get(pid_, {"run_cnt": 0, "run_time_ns": 0})
                    progs[names.get(pid_, str(pid_))] = {
                        "type": s1["type"], "runs": s1["run_cnt"] - s0_["run_cnt"],
                        "ns": s1["run_time_ns"] - s0_["run_time_ns"]}
                row["progs"] = progs
                row["uprobe_runs"] = sum(v["runs"] for v in progs.values() if v["type"] == 2)
                row["syscw"] = io1["syscw"] - io0["syscw"]
                row["wchar"] = io1["wchar"] - io0["wchar"]
                if m0 and m1:
                    row["mallocs"] = (m1[0] - m0[0]) + (m1[1] - m0[1])
                    row["malloc_bytes"] = m1[3] - m0[3]
                row["tlstap_hwm_kb"] = status_kb(tp.pid).get("VmHWM")
                if samples:
                    row["rss_kb"] = med([s[0] for s in samples])
                    row["rss_max_kb"] = max(s[0] for s in samples)
                    row["rss_anon_kb"] = med([s[1] for s in samples])
                    row["rss_ring_kb"] = med([s[3] for s in samples])
                rc, ru, summ, err = self.stop_tlstap(tp)
                tp = None
                row["tlstap_rc"] = rc
                row["tlstap_cpu"] = ru_cpu(ru) - row["cpu_ready"]
                row["summary"] = summ
                row["lost"] = summ["lost"] if summ else None
                if cfg in ("jsonl", "null"):
                    comp = self.completeness(cap, sp.pid)
                    row["capture"] = comp
                    if comp["stats"]:
                        row["lost"] = comp["stats"]["lost"]
                        row["lost_by_cause"] = comp["stats"].get("lost_by_cause")
                    if cfg == "jsonl":
                        row["complete_resp"] = comp["responses"] / row["ok"] if row["ok"] else float("nan")
                        row["complete_req"] = comp["requests"] / row["ok"] if row["ok"] else float("nan")
                        row["complete_http"] = comp["exchanges"] / row["ok"] if row["ok"] else float("nan")
                        row["undecodable"] = comp["undecodable"]
        finally:
            self.teardown(sp, tlstap=tp, workdir=os.path.dirname(srv))
        return row

    @staticmethod
    def read_counts(path):
        if not path:
            return None
        with open(path, "rb") as fh:
            b = fh.read(32)
        return [int.from_bytes(b[i:i + 8], "little") for i in range(0, 32, 8)]

    def overhead(self):
        cfgs = ["untraced", "null", "text", "jsonl"]
        log(f"== overhead A/B: {self.a.rounds} rounds x {cfgs}, hey -n {self.a.requests} -c {self.a.concurrency}")
        warm = self.overhead_run("untraced", -1)  # warm-up, not recorded
        log(f"  warm-up untraced: {warm['rps']:.0f} req/s")
        rows = []
        # BPF run-time stats on for the whole A/B (all traced configs pay the same few ns per run)
        with BpfStats():
            for r in range(self.a.rounds):
                order = cfgs[r % 4:] + cfgs[:r % 4]
                for cfg in order:
                    la = open("/proc/loadavg").read().split()[0]
                    row = self.overhead_run(cfg, r)
                    row["loadavg"] = float(la)
                    rows.append(row)
                    log(f"  round {r} {cfg:8s} {row['rps']:8.0f} req/s  ok {row['ok']}  "
                        f"hey {row['hey_cpu']:.2f}s srv {row['srv_cpu']:.2f}s"
                        + (f"  tlstap {row['tlstap_cpu']:.2f}s ready {row['ready_s']*1000:.0f}ms hits/req "
                           f"{row['uprobe_runs']/max(row['ok'],1):.2f} lost {row['lost']} syscw {row['syscw']}"
                           f" rss {row.get('rss_kb')}kB" if cfg != "untraced" else "")
                        + (f"  complete resp {row['complete_resp']:.4f} req {row['complete_req']:.4f}" if cfg == "jsonl" else "")
                        + f"  load {la}")
            # BPF program cost without CPU contention: stats count wall time, preemption included
            low = {}
            for cfg in ("null", "jsonl"):
                low[cfg] = self.overhead_run(cfg, 97, n=2000, c=1)
                pr = {k: (v["ns"] / v["runs"] if v["runs"] else None) for k, v in low[cfg]["progs"].items() if v["type"] == 2}
                log(f"  low load (hey -c 1 -n 2000) {cfg}: {low[cfg]['rps']:.0f} req/s, uprobe program ns/run {pr}")
        extra = {"lowload": low}
        try:
            extra["hits"] = self.hit_breakdown()
        except Exception as e:
            log(f"  ! hit breakdown failed: {e}")
        if self.malloc_so:
            try:
                extra["malloc"] = self.malloc_run()
            except Exception as e:
                log(f"  ! malloc run failed: {e}")
        extra["ring64"] = self.overhead_run("jsonl", 98, extra=["--ringbuf-mb", "64"])
        extra["profile"] = {cfg: self.profiled_run(cfg, max(self.a.requests // 2, 1000)) for cfg in ("jsonl", "text")}
        try:
            extra["kprofile"] = self.kernel_profile(max(self.a.requests // 2, 1000))
        except Exception as e:
            log(f"  ! kernel profile failed: {e}")
        log(f"  --ringbuf-mb 64 jsonl run: rss {extra['ring64'].get('rss_kb')} kB lost {extra['ring64'].get('lost')}")
        self.res["sections"]["overhead"] = {"rows": rows, "extra": extra}

    def probe_points(self, binary):
        """[(kind, file offset, vaddr)] of the attach points `--dry-run` lists for binary."""
        out = subprocess.run([self.tlstap, "gotls", "-e", binary, "--dry-run"], capture_output=True, text=True).stdout
        # e.g. "probe:    read return  crypto/tls.(*Conn).Read vaddr 0xfb2ec4 file offset 0xbb2ec4"
        return [(m.group(1).strip(), int(m.group(3), 16), int(m.group(2), 16))
                for m in re.finditer(r"^probe:\s+(.+?)\s+\S+ vaddr (0x[0-9a-f]+) file offset (0x[0-9a-f]+)", out, re.M)]

    def hit_breakdown(self):
        """Untraced server, perf uprobe counters at tlstap's attach points: hits per point per request."""
        n = max(self.a.requests // 4, 1000)
        srv = self.copy_target("hits")
        pts = self.probe_points(srv)
        sp, addr = self.start_server(srv)
        try:
            with UprobeCounters(srv, [(f"{k} @0x{va:x}", off) for k, off, va in pts]) as uc:
                h = self.hey(addr, n, self.a.concurrency)
                hits = uc.read()
        finally:
            self.teardown(sp, workdir=os.path.dirname(srv))
        out = {"requests": h["ok"], "rps": h["rps"], "points": [{"point": l, "hits": c} for l, _, c in hits]}
        log(f"  hit breakdown ({h['ok']} requests, perf uprobe counters, no tlstap): " +
            ", ".join(f"{l}: {c/h['ok']:.2f}" for l, _, c in hits) +
            f"; total without keylog {sum(c for l, _, c in hits if not l.startswith('keylog'))/h['ok']:.2f}/req")
        return out

    def malloc_run(self):
        """jsonl capture with the heap-call counter preloaded; two hey runs (N/4, then N requests,
        each over fresh connections): the difference gives heap calls per additional event."""
        srv = self.copy_target("malloc")
        sp, addr = self.start_server(srv)
        d = os.path.dirname(srv)
        cap, counts = os.path.join(d, "cap.jsonl"), os.path.join(d, "malloc.counts")
        with open(counts, "wb") as fh:
            fh.write(b"\0" * 4096)
        env = dict(os.environ, LD_PRELOAD=self.malloc_so, TLSTAP_BENCH_MALLOC_COUNTS=counts)
        tp = None
        try:
            tp, _ = self.start_tlstap(["-e", srv, "--format", "jsonl", "-o", cap], "record", out=cap, env=env)
            self.settle(tp.pid, quiet=0.2)
            pts = [(self.read_counts(counts), self.data_lines(cap), proc_io(tp.pid))]
            for n in (max(self.a.requests // 4, 500), self.a.requests):
                self.hey(addr, n, self.a.concurrency)
                self.settle(tp.pid, quiet=0.3)
                pts.append((self.read_counts(counts), self.data_lines(cap), proc_io(tp.pid)))
            self.stop_tlstap(tp)
            tp = None
        finally:
            self.teardown(sp, tlstap=tp, workdir=d)
        calls = [c[0] + c[1] for c, _, _ in pts]
        ev = [e for _, e, _ in pts]
        dA, dB = calls[1] - calls[0], calls[2] - calls[1]
        eA, eB = ev[1] - ev[0], ev[2] - ev[1]
        out = {"phases": [{"events": eA, "heap_calls": dA}, {"events": eB, "heap_calls": dB}],
               "marginal_per_event": (dB - dA) / (eB - eA) if eB != eA else None,
               "syscw": pts[2][2]["syscw"] - pts[0][2]["syscw"], "wchar": pts[2][2]["wchar"] - pts[0][2]["wchar"],
               "events": eA + eB, "startup_heap_calls": calls[0]}
        log(f"  heap calls under load: {dA} for {eA} events, then {dB} for {eB} events -> marginal "
            f"{f(out['marginal_per_event'], '{:.5f}')} per event (startup: {calls[0]})")
        return out

    @staticmethod
    def data_lines(path):
        with open(path, "rb") as fh:
            return sum(1 for l in fh if l.startswith(b'{"type":"data"'))

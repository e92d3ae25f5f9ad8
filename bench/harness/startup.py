"""3. Startup (tlstap start -> probes live), analysis (--dry-run) and host-wide discovery
(exec -> attach), on the fixture and large stripped Go binaries from Debian."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from .common import BIG, CACHE, ROOT, log
from .procfs import PROCS, cpu_s, links, ru_cpu, status_kb
from .stats import med, spread


class StartupMixin:
    # -- 3. startup, discovery, analysis
    def big_binaries(self):
        out = []
        for pkg, rel, run in BIG:
            dest = os.path.join(CACHE, "x", pkg)
            path = os.path.join(dest, rel)
            if not os.path.exists(path):
                debs = os.path.join(CACHE, "debs")
                os.makedirs(debs, exist_ok=True)
                log(f"  fetching Debian package {pkg} (apt-get download; nothing is installed)")
                r = subprocess.run(["apt-get", "download", pkg], cwd=debs, capture_output=True, text=True)
                if r.returncode != 0:
                    subprocess.run(["apt-get", "update"], capture_output=True)
                    r = subprocess.run(["apt-get", "download", pkg], cwd=debs, capture_output=True, text=True)
                if r.returncode != 0:
                    log(f"  ! apt-get download {pkg} failed: {r.stderr.strip()[-200:]}")
                    continue
                deb = sorted(x for x in os.listdir(debs) if x.startswith(pkg + "_"))[-1]
                os.makedirs(dest, exist_ok=True)
                subprocess.run(["dpkg-deb", "-x", os.path.join(debs, deb), dest], check=True)
            ftype = subprocess.run(["file", "-b", path], capture_output=True, text=True).stdout
            if "not stripped" in ftype:
                sp = path + ".stripped"
                if not os.path.exists(sp):
                    subprocess.run(["strip", "--strip-all", "-o", sp, path], check=True)
                path = sp
            ver = subprocess.run(["dpkg-deb", "-f", os.path.join(CACHE, "debs", sorted(
                x for x in os.listdir(os.path.join(CACHE, "debs")) if x.startswith(pkg + "_"))[-1]), "Version"],
                capture_output=True, text=True).stdout.strip()
            out.append({"pkg": pkg, "version": ver, "path": path, "size": os.path.getsize(path), "run": run,
                        "stripped": "not stripped" not in ftype})
        return out

    def startup(self):
        bigs = self.big_binaries()
        self.res["big"] = [{k: v for k, v in b.items() if k != "run"} for b in bigs]
        reps = self.a.startup_reps
        targets = [("fixture", self.fixture)] + [(b["pkg"], b["path"]) for b in bigs]
        sec = {"ready": {}, "dryrun": {}, "discovery": {}}
        log(f"== startup: tlstap start -> attach record, {reps} runs each")
        ready_targets = [(n, p, []) for n, p in targets if n != "prometheus"]  # prometheus: analysis only
        if len(ready_targets) > 1:  # what a 64 MiB ring buffer costs at start
            ready_targets.append((ready_targets[1][0] + " --ringbuf-mb 64", ready_targets[1][1], ["--ringbuf-mb", "64"]))
        for name, path, flags in ready_targets:
            priv = self.copy_target("st-" + name.split()[0], path)
            rows = []
            for i in range(reps):
                tp, dt = self.start_tlstap(["-e", priv, "--format", "jsonl", *flags], "record")
                st = status_kb(tp.pid)
                c = cpu_s(tp.pid)
                rc, ru, summ, _ = self.stop_tlstap(tp)
                rows.append({"ready_s": dt, "cpu_s": c, "hwm_kb": st.get("VmHWM"), "rss_kb": st.get("VmRSS"),
                             "rss_anon_kb": st.get("RssAnon"), "record": tp.first.strip()[:200]})
            sec["ready"][name] = {"size": os.path.getsize(path), "rows": rows}
            log(f"  {name:10s} {os.path.getsize(path)/1e6:5.1f} MB: ready {spread([r['ready_s']*1000 for r in rows], '{:.1f}')} ms,"
                f" cpu {med([r['cpu_s'] for r in rows])*1000:.0f} ms, VmHWM at ready {med([r['hwm_kb'] for r in rows])/1024:.1f} MiB"
                f" (anon {med([r['rss_anon_kb'] for r in rows])/1024:.1f} MiB)   {rows[0]['record'][:100]}")
        log(f"== analysis: tlstap gotls -e BIN --dry-run, {reps} runs each")
        strip_fixture = subprocess.run(["bash", "scripts/fixture.sh", self.a.go, "exe-strip", "tlsfixture"], cwd=ROOT,
                                       capture_output=True, text=True).stdout.strip()
        if strip_fixture:
            targets.insert(1, ("fixture-stripped", strip_fixture))
        for name, path in targets:
            rows = []
            for i in range(reps):
                # /usr/bin/time reports tlstap's own peak RSS: a child forked from this Python would
                # carry the interpreter's footprint into ru_maxrss
                tf = os.path.join(self.wd, "time.out")
                t0 = time.monotonic()
                p = PROCS.spawn(["/usr/bin/time", "-o", tf, "-f", "%M", self.tlstap, "gotls", "-e", path, "--dry-run"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                out = p.stdout.read().decode(errors="replace")
                rc, ru = PROCS.reap(p, 120)
                wall = time.monotonic() - t0
                maxrss = int(open(tf).read().split()[-1])
                rows.append({"wall_s": wall, "cpu_s": ru_cpu(ru), "maxrss_kb": maxrss,
                             "rc": rc, "tls": "crypto/tls.(*Conn).Write" in out,
                             "symbols": (re.search(r"^symbols:\s*(.*)$", out, re.M) or [None, "?"])[1],
                             "go": (re.search(r"^go:\s*(.*)$", out, re.M) or [None, "?"])[1]})
            sec["dryrun"][name] = {"size": os.path.getsize(path), "rows": rows}
            log(f"  {name:16s} {os.path.getsize(path)/1e6:5.1f} MB {rows[0]['go']} {rows[0]['symbols']}: "
                f"{spread([r['wall_s']*1000 for r in rows], '{:.1f}')} ms wall, cpu {med([r['cpu_s'] for r in rows])*1000:.1f} ms,"
                f" peak RSS {med([r['maxrss_kb'] for r in rows])/1024:.1f} MiB, tls probes {rows[0]['tls']} rc {rows[0]['rc']}")
        self.discovery(bigs, sec)
        sec["library"] = self.library_bench()
        self.res["sections"]["startup"] = sec

    def library_bench(self):
        """goelf's own benchmark (crates/goelf/benches/analyze.rs): parse + TLS plan of the largest
        stripped Go binaries, in-process, 30 rounds each. Its lines, as printed."""
        log("== analysis library: cargo bench -p goelf --bench analyze")
        r = subprocess.run(["cargo", "bench", "-q", "-p", "goelf", "--bench", "analyze"], cwd=ROOT,
                           capture_output=True, text=True)
        lines = [l for l in r.stdout.splitlines() if "parse+plan" in l]
        for l in lines:
            log("  " + l)
        if r.returncode != 0:
            log(f"  ! cargo bench exit {r.returncode}: {r.stderr[-300:]!r}")
        return lines

    def discovery(self, bigs, sec):
        if "--comm" not in self.help:
            log("  (no --comm in this tlstap: discovery timing skipped, it would hook the whole host)")
            return
        comm = "tlsbench%d" % (os.getpid() % 10000)  # ≤ 15 bytes: our exec'd copies only
        empty = tempfile.mkdtemp(prefix="empty-", dir=self.wd)
        runs = [("fixture", self.fixture, ["server", "--manifest", "/dev/null"])]
        runs += [(b["pkg"], b["path"], [a.replace("{dir}", empty) for a in b["run"]]) for b in bigs if b["run"]]
        # (mode, flags, fresh copy per exec). "cached": the same file exec'd again after tlstap
        # released it (--linger 0): its analysis is remembered, so this is BPF attach alone.
        linger = ["--linger", "0"] if "--linger" in self.help else []
        modes = [("watch", linger, True)]
        if "--catch-exec" in self.help:
            modes.append(("catch-exec", linger + ["--catch-exec"], True))
        if linger:
            modes.append(("cached, catch-exec", linger + ["--catch-exec"], False))
        log(f"== discovery: tlstap gotls --comm {comm} (host-wide mode limited to our copies): exec -> attach record")
        for mode, flags, fresh in modes:
            cap = os.path.join(self.wd, f"disc-{mode}.jsonl")
            err = open(os.path.join(self.wd, f"disc-{mode}.err"), "w+")
            tp = PROCS.spawn([self.tlstap, "gotls", "--comm", comm, "--format", "jsonl", "-o", cap, "-v", "--raw", *flags],
                             stop_sig=signal.SIGINT, stdout=subprocess.DEVNULL, stderr=err)
            tp.errfile = err
            t0 = time.monotonic()
            while not links(tp.pid) and time.monotonic() - t0 < 30 and tp.poll() is None:
                time.sleep(0.005)
            self.settle(tp.pid, quiet=0.2, limit=10)
            for name, path, args in runs:
                rows = []
                # Not fresh: one copy for all, and a first exec (the analysis) not counted.
                for i in range(self.a.startup_reps + (0 if fresh else 1)):
                    if fresh or i == 0:
                        d = tempfile.mkdtemp(prefix=f"disc-{name}-", dir=self.wd)
                        priv = os.path.join(d, comm)
                        shutil.copy2(path, priv)
                    seen = self.count_lines(cap)
                    te = time.monotonic()
                    tgt = PROCS.spawn([priv, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    dt = None
                    while time.monotonic() - te < 20:
                        new = self.lines_from(cap, seen)
                        if any('"attach"' in l and priv in l for l in new):
                            dt = time.monotonic() - te
                            break
                        time.sleep(0.0005)
                    PROCS.stop(tgt)
                    # wait for the detach so the next run starts clean
                    t_end = time.monotonic() + 5
                    while time.monotonic() < t_end and not any('"detach"' in l and priv in l for l in self.lines_from(cap, seen)):
                        time.sleep(0.01)
                    if fresh or i > 0:
                        rows.append({"attach_s": dt})
                err.seek(0)
                said = re.findall(r"hooked \S*/" + comm + r" \(pid \d+\) ([\d.]+) ms after exec"
                                  r"(?: \(analysis ([\d.]+) ms, attach ([\d.]+) ms\))?", err.read())[-len(rows):]
                tl = [float(x[0]) for x in said]
                attach_ms = [float(x[2]) for x in said if x[2]]
                sec["discovery"][f"{name} ({mode})"] = {"rows": rows, "tlstap_ms": tl, "attach_ms": attach_ms}
                log(f"  {name:10s} {mode:10s}: exec -> attach record {spread([r['attach_s']*1000 if r['attach_s'] else None for r in rows], '{:.1f}')} ms;"
                    f" tlstap -v says {spread(tl, '{:.1f}')} ms, of which BPF attach {spread(attach_ms, '{:.1f}')} ms")
            rc, ru, summ, errtxt = self.stop_tlstap(tp)
            if rc != 0:
                log(f"  ! discovery tlstap exit {rc}")

    @staticmethod
    def count_lines(path):
        try:
            with open(path) as fh:
                return sum(1 for _ in fh)
        except FileNotFoundError:
            return 0

    @staticmethod
    def lines_from(path, n):
        try:
            with open(path) as fh:
                return fh.readlines()[n:]
        except FileNotFoundError:
            return []

"""Bench setup (builds, machine description) and the primitives every measurement uses: target
copies, the fixture server, tlstap start/stop, hey, waiting for a process to go idle."""

import datetime
import json
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time

from .common import CACHE, HERE, NONCE, ROOT, log
from .procfs import PROCS, cpu_s, links, ru_cpu


class BaseBench:
    def __init__(self, args):
        self.a = args
        self.wd = tempfile.mkdtemp(prefix="tlstap-bench-", dir="/dev/shm")  # tmpfs: captures cost no disk
        self.res = {"sections": {}}
        self.tlstap = args.tlstap or os.path.join(ROOT, "target/release/tlstap")
        self.help = ""
        self.malloc_so = None

    # -- setup
    def build(self):
        if not self.a.tlstap and not self.a.no_build:
            log("== build: cargo build --release -p tlstap")
            subprocess.run(["cargo", "build", "--release", "-p", "tlstap"], cwd=ROOT, check=True)
        log(f"== fixture: scripts/fixture.sh {self.a.go} exe tlsfixture")
        self.fixture = subprocess.run(["bash", "scripts/fixture.sh", self.a.go, "exe", "tlsfixture"], cwd=ROOT,
                                      check=True, capture_output=True, text=True).stdout.strip()
        # The HTTP view's runs (httpview.py): a server that speaks HTTP/2 as well.
        self.http_fixture = subprocess.run(["bash", "scripts/fixture.sh", self.a.go, "exe", "httpfixture"], cwd=ROOT,
                                           check=True, capture_output=True, text=True).stdout.strip()
        self.help = subprocess.run([self.tlstap, "gotls", "--help"], capture_output=True, text=True).stdout
        self.tlsbench = self.build_tlsbench()
        so = os.path.join(self.wd, "malloc_count.so")
        r = subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", so, os.path.join(HERE, "malloc_count.c")],
                           capture_output=True, text=True)
        if r.returncode == 0:
            self.malloc_so = so
        else:
            log(f"  ! malloc counter not built: {r.stderr.strip()[:200]}")

    def build_tlsbench(self):
        """bench/tlsbench (manifest-free echo server), built once per source and Go version."""
        goroot = subprocess.run(["bash", "scripts/go-toolchain.sh", self.a.go], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.strip()
        src = os.path.join(HERE, "tlsbench", "main.go")
        gover = subprocess.run([os.path.join(goroot, "bin", "go"), "version"], capture_output=True, text=True,
                               env=dict(os.environ, GOROOT=goroot, GOTOOLCHAIN="local")).stdout.strip()
        import hashlib
        h = hashlib.sha256(open(src, "rb").read() + gover.encode()).hexdigest()[:16]
        out = os.path.join(CACHE, "tlsbench", h, "tlsbench")
        if os.path.exists(out):
            return out
        log(f"== build bench/tlsbench with {gover}")
        work = tempfile.mkdtemp(prefix="tlsbench-build-", dir=self.wd)
        shutil.copy(src, work)
        minor = re.search(r"go1\.(\d+)", gover).group(1)
        with open(os.path.join(work, "go.mod"), "w") as fh:
            fh.write(f"module tlsbench\n\ngo 1.{minor}\n")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        subprocess.run([os.path.join(goroot, "bin", "go"), "build", "-o", out + ".tmp", "."], cwd=work, check=True,
                       env=dict(os.environ, GOROOT=goroot, GOTOOLCHAIN="local", GOFLAGS="-trimpath -buildvcs=false",
                                GOPROXY="off", CGO_ENABLED="0", GOENV="off",
                                GOCACHE=os.path.join(CACHE, "gocache")))
        os.rename(out + ".tmp", out)
        return out

    def machine(self):
        def sh(*c):
            try:
                return subprocess.run(c, capture_output=True, text=True, cwd=ROOT, timeout=30).stdout.strip()
            except Exception:
                return "?"
        cpu = "?"
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            mem_kb = int(fh.readline().split()[1])
        dirty = sh("git", "status", "--porcelain", "--", "crates", "Cargo.toml", "Cargo.lock")
        dry = sh(self.tlstap, "gotls", "-e", self.fixture, "--dry-run")
        gov = re.search(r"^go:\s*(\S+)", dry, re.M)
        m = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "os": "Debian " + sh("cat", "/etc/debian_version"),
            "fixture_go": gov.group(1) if gov else "?",
            "commit": sh("git", "rev-parse", "--short=12", "HEAD") + (" + uncommitted changes in crates/" if dirty else ""),
            "rustc": sh("rustc", "--version"), "hey": sh("dpkg-query", "-W", "-f", "${Version}", "hey"),
            "loadavg_start": open("/proc/loadavg").read().split()[:3],
        }
        self.res["machine"] = m
        log("== machine", json.dumps(m))

    # -- primitives
    def copy_target(self, name, src=None):
        d = tempfile.mkdtemp(prefix=name + "-", dir=self.wd)
        dst = os.path.join(d, os.path.basename(src or self.fixture) if src else "srv")
        shutil.copy2(src or self.fixture, dst)  # a new inode: its own uprobes
        return dst

    def start_server(self, binary, prefix=()):
        """prefix: a command the server runs under (e.g. taskset -c 1), which execs it."""
        p = PROCS.spawn([*prefix, binary, "server", "--manifest", "/dev/null"], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL)
        r, _, _ = select.select([p.stdout], [], [], 30)
        line = p.stdout.readline().decode() if r else ""
        if not line.startswith("LISTEN "):
            PROCS.stop(p)
            raise RuntimeError(f"fixture server did not listen: {line!r}")
        return p, line.split()[1]

    def start_tlstap(self, argv, ready, out=None, env=None, timeout=60, prefix=()):
        """Starts tlstap; ready: 'record' (first JSONL line of `out`, a file path or None for
        stdout) or ('link', path) (an uprobe link on path). Returns (Popen, seconds to ready)."""
        err = open(os.path.join(self.wd, f"tlstap-{time.monotonic_ns()}.err"), "w+")
        t0 = time.monotonic()
        # The per-call view (what the figures have always measured), unless a run asks for the
        # HTTP view.
        if "--http-view" in argv:
            argv = [a for a in argv if a != "--http-view"]
        elif "--raw" not in argv:
            argv = [*argv, "--raw"]
        p = PROCS.spawn([*prefix, self.tlstap, "gotls", *argv], stop_sig=signal.SIGINT,
                        stdout=subprocess.PIPE if (ready == "record" and out is None) else subprocess.DEVNULL,
                        stderr=err, env=env)
        p.errfile = err
        end = t0 + timeout
        while True:
            if p.poll() is not None:
                err.seek(0)
                raise RuntimeError(f"tlstap exited {p.returncode} before ready: {err.read()[-500:]}")
            if ready == "record" and out is None:
                r, _, _ = select.select([p.stdout], [], [], 0.5)
                if r:
                    p.first = p.stdout.readline().decode()
                    break
            elif ready == "record":
                try:
                    with open(out) as fh:
                        line = fh.readline()
                    if line.endswith("\n"):
                        p.first = line
                        break
                except FileNotFoundError:
                    pass
                time.sleep(0.001)
            else:
                if any(t.startswith("uprobe") and ready[1] in info for t, info in links(p.pid)):
                    p.first = ""
                    break
                time.sleep(0.001)
            if time.monotonic() > end:
                raise RuntimeError("tlstap not ready in time")
        return p, time.monotonic() - t0

    def stop_tlstap(self, p):
        rc, ru = PROCS.stop(p, signal.SIGINT, timeout=60)
        p.errfile.seek(0)
        err = p.errfile.read()
        m = re.search(r"tlstap: (\d+) events, (\d+) bytes, (\d+) lost", err)
        summ = {"events": int(m.group(1)), "bytes": int(m.group(2)), "lost": int(m.group(3))} if m else None
        if rc != 0 or not summ:
            log(f"  ! tlstap exit {rc}; stderr tail: {err[-400:]!r}")
        return rc, ru, summ, err

    def teardown(self, server, tlstap=None, perf=None, workdir=None):
        """Ends what one measurement started: perf first (it samples the others), then tlstap
        (its exit drains what the server produced), then the server and its work directory."""
        if perf:
            PROCS.stop(perf, signal.SIGINT)
        if tlstap:
            self.stop_tlstap(tlstap)
        PROCS.stop(server)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    def hey(self, addr, n, c, prefix=(), h2=False):
        url = f"https://{addr}/echo?size=64"
        p = PROCS.spawn([*prefix, "hey", *(["-h2"] if h2 else []), "-n", str(n), "-c", str(c), "-m", "POST",
                         "-H", f"X-Nonce: {NONCE}",
                         "-d", f"{NONCE}-bench", url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = p.stdout.read().decode(errors="replace")  # hey stops by itself: n requests, 20 s timeout each
        rc, ru = PROCS.reap(p, 60) or (None, None)
        rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
        total = re.search(r"Total:\s*([\d.]+) secs", out)
        codes = {int(k): int(v) for k, v in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
        errs = re.findall(r"^\s*\[(\d+)\]\s+(.*)$", out.split("Error distribution:")[1], re.M) \
            if "Error distribution:" in out else []
        return {"rps": float(rps.group(1)) if rps else float("nan"), "secs": float(total.group(1)) if total else None,
                "codes": codes, "ok": codes.get(200, 0), "errors": sum(int(k) for k, _ in errs),
                "cpu": ru_cpu(ru), "raw_tail": out[-300:] if not rps else ""}

    @staticmethod
    def settle(pid, quiet=0.3, limit=60):
        """Waits until the process has used no CPU for `quiet` seconds (ring buffer drained)."""
        end, last, since = time.monotonic() + limit, cpu_s(pid), time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.05)
            now = cpu_s(pid)
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return since
        return time.monotonic()

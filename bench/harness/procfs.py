"""Child processes (each ended by its own pid whatever happens) and what /proc, fdinfo, bpftool,
BPF_ENABLE_STATS and uprobe perf counters say about them."""

import ctypes
import json
import os
import re
import signal
import subprocess
import time

from .common import CLK, log


class Procs:
    """Every child we start, so that each one is ended (by its own pid) whatever happens."""

    def __init__(self):
        self.live = {}  # pid -> (Popen, stop signal)

    def spawn(self, argv, stop_sig=signal.SIGTERM, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)  # our Ctrl-C is not theirs; we stop them in order
        p = subprocess.Popen(argv, **kw)
        self.live[p.pid] = (p, stop_sig)
        return p

    def reap(self, p, timeout):
        """Waits up to timeout for p; returns (exit status, rusage) or None."""
        end = time.monotonic() + timeout
        while True:
            try:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            except ChildProcessError:
                self.live.pop(p.pid, None)
                return (p.returncode if p.returncode is not None else -1, None)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                self.live.pop(p.pid, None)
                return (p.returncode, ru)
            if time.monotonic() > end:
                return None
            time.sleep(0.005)

    def stop(self, p, sig=None, timeout=20):
        if p.pid not in self.live:
            return (p.returncode, None)
        sig = sig or self.live[p.pid][1]
        try:
            if sig != signal.SIGCONT:
                os.kill(p.pid, signal.SIGCONT)  # a --catch-exec'd target may be stopped
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        r = self.reap(p, timeout)
        if r is None:
            log(f"  ! pid {p.pid} ({p.args[0]}) did not exit {timeout}s after signal {sig}: SIGKILL")
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            r = self.reap(p, 10) or (-9, None)
        return r

    def cleanup(self):
        for pid, (p, sig) in list(self.live.items()):
            self.stop(p, sig, timeout=5)


PROCS = Procs()


def cpu_s(pid):
    """utime+stime of a live process, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def ru_cpu(ru):
    return ru.ru_utime + ru.ru_stime if ru else float("nan")


def status_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if v.strip().endswith("kB"):
                out[k] = int(v.split()[0])
    return out


def bpfmap_rss_kb(pid):
    """Resident kB of the process's mappings of BPF maps (the ring buffer, the Read slots)."""
    total, in_bpf = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                in_bpf = "anon_inode:bpf-map" in line
            elif in_bpf and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


def proc_io(pid):
    out = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = int(v)
    return out


def fdinfos(pid):
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue
        yield target, info


def prog_stats(pid):
    """{prog_id: {type, run_cnt, run_time_ns}} of the BPF programs tlstap holds."""
    out = {}
    for target, info in fdinfos(pid):
        if target != "anon_inode:bpf-prog":
            continue
        kv = dict(re.findall(r"^(\w+):\s*(\S+)", info, re.M))
        out[int(kv["prog_id"])] = {"type": int(kv["prog_type"]), "run_cnt": int(kv.get("run_cnt", 0)),
                                   "run_time_ns": int(kv.get("run_time_ns", 0))}
    return out


def links(pid):
    """[(link_type, info)] of the BPF links tlstap holds."""
    out = []
    for target, info in fdinfos(pid):
        if target == "anon_inode:bpf_link":
            m = re.search(r"^link_type:\s*(\S+)", info, re.M)
            out.append((m.group(1) if m else "?", info))
    return out


def prog_names(ids):
    try:
        r = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True, timeout=30)
        return {p["id"]: p.get("name", "?") for p in json.loads(r.stdout) if p["id"] in ids}
    except Exception as e:  # names are a nicety
        log(f"  ! bpftool: {e}")
        return {}


class BpfStats:
    """Kernel BPF run-time stats, on while an fd from BPF_ENABLE_STATS is held: nothing global
    to restore, and it ends with this process whatever happens (kernel.bpf_stats_enabled is
    left untouched)."""

    def __init__(self):
        self.fd = None

    def __enter__(self):
        libc = ctypes.CDLL(None, use_errno=True)
        attr = (ctypes.c_uint8 * 128)()  # union bpf_attr; enable_stats.type = BPF_STATS_RUN_TIME (0)
        fd = libc.syscall(321, 32, attr, 128)  # SYS_bpf (x86-64), BPF_ENABLE_STATS
        if fd < 0:
            raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS")
        self.fd = fd
        return self

    def __exit__(self, *a):
        os.close(self.fd)


class UprobeCounters:
    """Counting perf events on the uprobe PMU at given file offsets of a binary, one per CPU:
    how often each attach point traps. No tracefs, nothing global; closing the fds removes them."""

    def __init__(self, path, points):
        self.path = path.encode() + b"\0"
        self.points = points  # [(label, file offset)]
        self.fds = []

    def __enter__(self):
        libc = ctypes.CDLL(None, use_errno=True)
        typ = int(open("/sys/bus/event_source/devices/uprobe/type").read())
        self._path = ctypes.create_string_buffer(self.path)
        for label, off in self.points:
            fds = []
            for cpu in range(os.cpu_count()):
                attr = (ctypes.c_uint8 * 72)()  # perf_event_attr, PERF_ATTR_SIZE_VER1
                ctypes.memmove(ctypes.addressof(attr), typ.to_bytes(4, "little") + (72).to_bytes(4, "little"), 8)
                ctypes.memmove(ctypes.addressof(attr) + 56, ctypes.addressof(self._path).to_bytes(8, "little")
                               + off.to_bytes(8, "little"), 16)  # config1 = uprobe_path, config2 = offset
                fd = libc.syscall(298, attr, -1, cpu, -1, 0)  # SYS_perf_event_open: all pids on this cpu
                if fd < 0:
                    raise OSError(ctypes.get_errno(), f"perf_event_open uprobe {label}")
                fds.append(fd)
            self.fds.append((label, off, fds))
        return self

    def read(self):
        return [(label, off, sum(int.from_bytes(os.read(fd, 8), "little") for fd in fds)) for label, off, fds in self.fds]

    def __exit__(self, *a):
        for _, _, fds in self.fds:
            for fd in fds:
                os.close(fd)


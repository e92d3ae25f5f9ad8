//! Processes stopped at exec for --catch-exec (the `held_processes` map, struct
//! tlstap_held_proc in events.h): never left stopped. The capture loop continues each one
//! once it is hooked; a watchdog thread continues any still held past a deadline, whatever
//! blocks the loop (output back-pressure, a slow analysis, an early return); and the map is
//! pinned under bpffs, so that what a tlstap killed with SIGKILL left stopped is continued by
//! the next one to start.
//!
//! Must stay true: a process is sent SIGCONT only while it is stopped and is the one held (its
//! start time matches), so a reused pid or a process stopped by someone else is left alone.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::skel::types::tlstap_held_proc;

/// Where BPF objects are pinned.
const BPFFS: &str = "/sys/fs/bpf";
/// Name of a run's pinned list of held processes, before its tlstap's pid.
const HELD_PIN_PREFIX: &str = "tlstap-held-";
const _: () = assert!(std::mem::size_of::<tlstap_held_proc>() == 16, "events.h: tlstap_held_proc is 16 bytes");

/// Where the run of tlstap `pid` pins its list.
pub(crate) fn pin_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("{BPFFS}/{HELD_PIN_PREFIX}{pid}"))
}

/// Whether the BPF filesystem is at [`BPFFS`], mounting it there (as bpftool does) if not.
pub(crate) fn ensure_bpffs() -> bool {
    const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;
    let is_bpffs = || {
        let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
        // SAFETY: the path is a NUL-terminated literal; statfs writes only into `st`, which is
        // read only when it succeeded.
        let ok = unsafe { libc::statfs(c"/sys/fs/bpf".as_ptr(), st.as_mut_ptr()) } == 0;
        // SAFETY: statfs succeeded, so it initialised `st`.
        ok && unsafe { st.assume_init() }.f_type == BPF_FS_MAGIC
    };
    if is_bpffs() {
        return true;
    }
    // SAFETY: every pointer is a NUL-terminated literal; mount reads them and keeps none.
    let mounted = unsafe {
        libc::mount(c"bpf".as_ptr(), c"/sys/fs/bpf".as_ptr(), c"bpf".as_ptr(), 0, c"mode=0700".as_ptr().cast())
    } == 0;
    mounted && is_bpffs()
}

/// Every (pid, entry) of a held-processes map.
fn entries(map: &impl MapCore) -> Vec<(u32, tlstap_held_proc)> {
    let mut out = Vec::new();
    for key in map.keys() {
        let Some(pid) = key.get(..4).and_then(|k| k.try_into().ok()).map(u32::from_ne_bytes) else { continue };
        let Ok(Some(value)) = map.lookup(&key, MapFlags::ANY) else { continue };
        let word = |i: usize| value.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
        if let (Some(start_boottime), Some(held_ns)) = (word(0), word(8)) {
            out.push((pid, tlstap_held_proc { start_boottime, held_ns }));
        }
    }
    out
}

/// Sends SIGCONT to `pid` if it still is the process held (stopped, same start); true if sent.
fn continue_if_held(pid: u32, held: &tlstap_held_proc) -> bool {
    if !still_held(pid, held.start_boottime) {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions; pid is a live process that is the one
    // held (checked just above).
    unsafe { libc::kill(pid as i32, libc::SIGCONT) == 0 }
}

/// Continues every process still listed in `map` (the capture is ending: no process may stay
/// stopped once tlstap is gone); returns how many.
pub(crate) fn continue_all(map: &impl MapCore) -> usize {
    entries(map).iter().filter(|(pid, held)| continue_if_held(*pid, held)).count()
}

/// Continues the processes a tlstap killed meanwhile left stopped at exec, from the lists such
/// runs pinned, and removes those lists. Lists of live tlstaps are left alone. Returns how many
/// processes were continued.
pub fn continue_stranded_processes() -> usize {
    let Ok(dir) = std::fs::read_dir(BPFFS) else { return 0 };
    let mut continued = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(owner) = name.to_str().and_then(|n| n.strip_prefix(HELD_PIN_PREFIX)) else { continue };
        if owner.parse::<u32>().is_ok_and(is_tlstap) {
            continue;
        }
        let path = entry.path();
        if let Ok(map) = MapHandle::from_pinned_path(&path) {
            continued += entries(&map).iter().filter(|(pid, held)| continue_if_held(*pid, held)).count();
        }
        let _ = std::fs::remove_file(&path);
    }
    continued
}

/// Whether `pid` is a running tlstap (its list is its own business).
fn is_tlstap(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "tlstap")
}

/// Whether `pid` is stopped and started at `start_ns` (boot clock; 0: unknown, then any start).
fn still_held(pid: u32, start_ns: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // After the command name (in parentheses, any bytes): state is field 3, starttime 22.
    let Some((_, rest)) = stat.rsplit_once(')') else { return false };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let stopped = fields.first().is_some_and(|s| *s == "T");
    // SAFETY: sysconf has no preconditions; it returns -1 (then 100 is assumed) on error.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    let started = fields.get(19).and_then(|t| t.parse::<u64>().ok());
    stopped && (start_ns == 0 || started == Some(start_ns / (1_000_000_000 / hz)))
}

/// How often the watchdog looks.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// A thread continuing processes held longer than a deadline; stopped (and joined) on drop.
#[derive(Debug)]
pub struct HeldWatchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl HeldWatchdog {
    pub(crate) fn start(map: MapHandle, deadline: Duration) -> HeldWatchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tlstap-held".to_string())
            .spawn(move || {
                let mut continued = 0;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(WATCH_EVERY);
                    let now = crate::clock::monotonic_ns();
                    for (pid, held) in entries(&map) {
                        if now.saturating_sub(held.held_ns) < deadline.as_nanos() as u64 {
                            continue;
                        }
                        if continue_if_held(pid, &held) {
                            continued += 1;
                        }
                        let _ = map.delete(&pid.to_ne_bytes());
                    }
                }
                continued
            })
            .ok();
        HeldWatchdog { stop, thread }
    }

    /// Stops the thread; returns how many processes it had to continue.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for HeldWatchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

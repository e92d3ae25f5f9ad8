//! Host-wide discovery: which running (and newly exec'd) processes run a Go binary that uses
//! crypto/tls, hooked once per binary file and released when its last process exits.
//!
//! Must stay true: a binary file is analysed once per identity (device, inode, size, mtime),
//! whatever its outcome, however many processes or containers run it; a process held by
//! --catch-exec is always continued, hooked or not; failures about one process never stop the
//! capture (they are reported once, as an [`Outcome`] the loop shows in verbose mode).
//!
//! Discovery attaches and detaches probes (it holds the capture for that) but writes nothing:
//! it returns [`Outcome`]s, which the capture loop writes to the sinks and to stderr.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tlstap_bpf::wire::ProcessEvent;
use tlstap_bpf::{BinaryHandle, Capture};
use tlstap_core::event::{AttachEvent, Event};

use crate::system;
use crate::target::{ProbeSet, Target};

/// A binary file's identity: the same file seen through any path, mount namespace or container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

impl FileId {
    /// The identity of an open file (fstat: the file itself, not whatever its path names now).
    fn of(file: &std::fs::File) -> Option<FileId> {
        let m = file.metadata().ok()?;
        Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        })
    }
}

struct Hooked {
    handle: BinaryHandle,
    /// The path the first process showed for it (inside its mount namespace).
    shown_path: PathBuf,
    pids: HashSet<u32>,
    /// When its last process exited; it is released after `linger` unless one comes back.
    idle_since: Option<Instant>,
}

/// What discovery did, for the capture loop to write (the events) and say (under -v).
#[derive(Debug)]
pub enum Outcome {
    /// A binary's probes are live.
    Attached {
        binary: PathBuf,
        go_version: String,
        abi: &'static str,
        probes: usize,
        /// The process whose exec led to it (None for those found at start), and how long
        /// each step took.
        after_exec: Option<ExecTiming>,
    },
    /// A binary's probes were removed: no process ran it for `--linger`, or the capture ends.
    Detached { binary: PathBuf },
    /// A process's binary is not hooked, and why.
    NotHooked { pid: u32, step: Step, why: String },
}

/// How long hooking a newly exec'd process took.
#[derive(Debug, Clone, Copy)]
pub struct ExecTiming {
    pub pid: u32,
    pub since_exec: Duration,
    pub analysis: Duration,
    pub attach: Duration,
}

/// Where hooking a binary stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Its analysis refused it (or overran its deadline).
    Analysis,
    /// The probes asked for are not all in it (e.g. -k and no writeKeyLog).
    Probes,
    /// The kernel refused a probe (the process may have exited meanwhile).
    Attach,
}

impl Outcome {
    /// The event the sinks are given, if any.
    pub fn event(&self) -> Option<Event<'_>> {
        match self {
            Outcome::Attached { binary, go_version, abi, probes, .. } => {
                Some(Event::Attach(AttachEvent { binary, go_version, abi, probes: *probes }))
            }
            Outcome::Detached { binary } => Some(Event::Detach { binary }),
            Outcome::NotHooked { .. } => None,
        }
    }

    /// The line -v prints to stderr, if any.
    pub fn verbose_line(&self) -> Option<String> {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        match self {
            Outcome::Attached { binary, after_exec: Some(t), .. } => Some(format!(
                "tlstap: hooked {} (pid {}) {:.1} ms after exec (analysis {:.1} ms, attach {:.1} ms)",
                binary.display(),
                t.pid,
                ms(t.since_exec),
                ms(t.analysis),
                ms(t.attach)
            )),
            Outcome::Attached { after_exec: None, .. } | Outcome::Detached { .. } => None,
            Outcome::NotHooked { pid, step: Step::Attach, why } => {
                Some(format!("tlstap: cannot hook pid {pid}: {why}"))
            }
            Outcome::NotHooked { pid, why, .. } => Some(format!("tlstap: not hooking pid {pid}: {why}")),
        }
    }
}

/// What is known about the binaries of the host's processes.
pub struct Discovery {
    probes: ProbeSet,
    /// Outcome of analysing each binary file: a hookable target, or why not. Bounded
    /// ([`MAX_ANALYSES`]): a host that makes new binaries endlessly must not grow it forever.
    analyses: HashMap<FileId, Rc<Result<Target, Refusal>>>,
    /// Go TLS programs seen and not hooked (analysis or attach failed): they are missing from
    /// the capture, which the summary says.
    not_hooked: HashSet<FileId>,
    hooked: HashMap<FileId, Hooked>,
    pids: HashMap<u32, FileId>,
    /// Process name filter (as BPF applies it), for the processes found at start.
    comm: Option<String>,
    uid: Option<u32>,
    /// How long a binary stays hooked after its last process exited (--linger): a program run
    /// again and again (a CLI in a loop, a cron job) is then hooked at no cost.
    linger: Duration,
}

/// Analyses remembered at most; past it they are forgotten (and redone when seen again).
const MAX_ANALYSES: usize = 4096;

/// Why a binary is not hooked.
struct Refusal {
    why: String,
    /// Not a Go TLS program at all (not ELF, not Go, no crypto/tls, ...): no capture is missing.
    not_a_go_tls_program: bool,
}

impl Refusal {
    fn of(err: &anyhow::Error) -> Refusal {
        use goelf::Error as E;
        let not_a_go_tls_program = matches!(
            err.root_cause().downcast_ref::<E>(),
            Some(
                E::NotElf
                    | E::Bits32 { .. }
                    | E::UnsupportedArch(_)
                    | E::NotGo(_)
                    | E::Gccgo(_)
                    | E::CShared(_)
                    | E::CArchive(_)
                    | E::NoCryptoTls { .. }
            )
        );
        Refusal { why: format!("{err:#}"), not_a_go_tls_program }
    }
}

impl Discovery {
    pub fn new(probes: ProbeSet, comm: Option<String>, uid: Option<u32>, linger: Duration) -> Self {
        Discovery {
            probes,
            analyses: HashMap::new(),
            not_hooked: HashSet::new(),
            hooked: HashMap::new(),
            pids: HashMap::new(),
            comm,
            uid,
            linger,
        }
    }

    /// Go TLS binaries seen but not hooked (see [`Discovery::not_hooked`]).
    pub fn binaries_not_hooked(&self) -> u64 {
        self.not_hooked.len() as u64
    }

    /// A Go TLS program that runs unhooked (counted once per file, up to MAX_ANALYSES).
    fn missed(&mut self, id: FileId) {
        if self.not_hooked.len() < MAX_ANALYSES {
            self.not_hooked.insert(id);
        }
    }

    /// Binaries hooked now.
    pub fn hooked_binaries(&self) -> usize {
        self.hooked.len()
    }

    /// Processes known to run a hooked binary now.
    pub fn hooked_processes(&self) -> usize {
        self.hooked.values().map(|h| h.pids.len()).sum()
    }

    /// Hooks the binaries of every process running now.
    pub fn scan(&mut self, capture: &mut Capture<'_>) -> Result<Vec<Outcome>> {
        let mut outcomes = Vec::new();
        for pid in system::pids()? {
            if self.matches_filters(pid) {
                outcomes.extend(self.consider(pid, None, capture));
            }
        }
        Ok(outcomes)
    }

    fn matches_filters(&self, pid: u32) -> bool {
        let comm_ok = self.comm.as_deref().is_none_or(|want| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == truncate_comm(want))
        });
        let uid_ok =
            self.uid.is_none_or(|want| std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == want));
        comm_ok && uid_ok
    }

    /// A process exec'd or exited (already filtered in BPF).
    pub fn on_process(&mut self, ev: &ProcessEvent, capture: &mut Capture<'_>) -> Option<Outcome> {
        // A new image replaces the old one: the pid may now run another binary.
        self.forget(ev.pid);
        if ev.exited {
            return None;
        }
        let outcome = self.consider(ev.pid, Some(ev.ts_ns), capture);
        if ev.held {
            // Testing only: a window in which a test kills tlstap with the process still held.
            if let Some(ms) = std::env::var("TLSTAP_TEST_CONTINUE_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
                eprintln!("tlstap: holding pid {} {ms} ms more (TLSTAP_TEST_CONTINUE_DELAY_MS)", ev.pid);
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            system::continue_process(ev.pid);
            capture.release_held(ev.pid);
        }
        outcome
    }

    /// Looks at the binary of `pid` and hooks it if it is a Go TLS program not hooked yet.
    fn consider(&mut self, pid: u32, exec_ts: Option<u64>, capture: &mut Capture<'_>) -> Option<Outcome> {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        // Opened once: identified, analysed and attached through this one descriptor, so a pid
        // reused meanwhile cannot put probes computed for one file into another.
        let file = std::fs::File::open(&exe).ok()?; // gone, or a kernel thread
        let id = FileId::of(&file)?;
        if let Some(hooked) = self.hooked.get_mut(&id) {
            hooked.pids.insert(pid);
            hooked.idle_since = None;
            self.pids.insert(pid, id);
            return None;
        }
        // The path as the process sees it (in its own mount namespace): for people to read.
        let shown_path = std::fs::read_link(&exe).unwrap_or_else(|_| exe.clone());
        let started = Instant::now();
        let mut first_refusal = None;
        let analysis = match self.analyses.get(&id) {
            Some(analysis) => Rc::clone(analysis),
            None => {
                let outcome = Target::analyze_file_within_deadline(file, &exe, &shown_path);
                // A file that could not be read (its process exited meanwhile) says nothing
                // about the binary: only what its bytes showed is remembered.
                let unreadable =
                    outcome.as_ref().err().is_some_and(|e| e.root_cause().downcast_ref::<std::io::Error>().is_some());
                let outcome = Rc::new(outcome.map_err(|e| Refusal::of(&e)));
                if let Err(refusal) = outcome.as_ref() {
                    // Said once per file: a refusal remembered below is not said again.
                    let said = Outcome::NotHooked { pid, step: Step::Analysis, why: refusal.why.clone() };
                    if unreadable {
                        return Some(said);
                    }
                    first_refusal = Some(said);
                }
                if self.analyses.len() >= MAX_ANALYSES {
                    self.analyses.clear();
                }
                self.analyses.insert(id, Rc::clone(&outcome));
                outcome
            }
        };
        let target = match analysis.as_ref() {
            Ok(target) => target,
            Err(why) => {
                // Programs that are no Go TLS program at all are no loss; the others are.
                if !why.not_a_go_tls_program {
                    self.missed(id);
                }
                return first_refusal;
            }
        };
        if target.check_runnable().is_err() {
            return None;
        }
        let probes = match target.probes(self.probes) {
            Ok(probes) => probes,
            Err(err) => {
                // E.g. -k and a binary without writeKeyLog: other binaries are still hooked.
                self.missed(id);
                return Some(Outcome::NotHooked { pid, step: Step::Probes, why: format!("{err:#}") });
            }
        };
        let analysed = Instant::now();
        let handle = match capture.attach(&target.attach_path(), &probes, target.bpf_config()) {
            Ok(handle) => handle,
            Err(err) => {
                // The process may have exited meanwhile; other processes go on being found.
                if system::process_exists(pid) {
                    self.missed(id);
                }
                let why = format!("{:#}", anyhow::Error::from(err));
                return Some(Outcome::NotHooked { pid, step: Step::Attach, why });
            }
        };
        let after_exec = exec_ts.map(|ts| ExecTiming {
            pid,
            since_exec: Duration::from_nanos(tlstap_bpf::clock::monotonic_ns().saturating_sub(ts)),
            analysis: analysed - started,
            attach: analysed.elapsed(),
        });
        let attached = Outcome::Attached {
            binary: shown_path.clone(),
            go_version: target.go_version.clone(),
            abi: target.abi_name(),
            probes: handle.probes,
            after_exec,
        };
        self.hooked.insert(id, Hooked { handle, shown_path, pids: HashSet::from([pid]), idle_since: None });
        self.pids.insert(pid, id);
        Some(attached)
    }

    /// A process is gone (or exec'd): its binary starts lingering when no other process runs it.
    fn forget(&mut self, pid: u32) {
        let Some(id) = self.pids.remove(&pid) else { return };
        let Some(hooked) = self.hooked.get_mut(&id) else { return };
        hooked.pids.remove(&pid);
        if hooked.pids.is_empty() {
            hooked.idle_since = Some(Instant::now());
        }
    }

    /// Releases binaries idle for longer than `linger` (all of them when `now` is None, at
    /// the end of the capture).
    pub fn release_idle(&mut self, now: Option<Instant>, capture: &mut Capture<'_>) -> Vec<Outcome> {
        let linger = self.linger;
        let idle: Vec<FileId> = self
            .hooked
            .iter()
            .filter(|(_, h)| match now {
                None => true,
                Some(now) => h.idle_since.is_some_and(|since| now.duration_since(since) >= linger),
            })
            .map(|(&id, _)| id)
            .collect();
        let mut outcomes = Vec::new();
        for id in idle {
            if let Some(hooked) = self.hooked.remove(&id) {
                capture.detach(hooked.handle);
                outcomes.push(Outcome::Detached { binary: hooked.shown_path });
            }
        }
        outcomes
    }
}

/// The kernel keeps 15 bytes of a command name.
fn truncate_comm(name: &str) -> &str {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

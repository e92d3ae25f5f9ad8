//! What pcap mode adds to an interface where the kernel has no tcx (clsact filters, and the
//! clsact qdisc when it made it) outlives tlstap when tlstap is killed with SIGKILL: a filter
//! holds its program, which would go on copying packets into a ring nobody reads. So while they
//! are there, they are written down in RECORD_DIR/PID-STARTTIME, and every tlstap removes, at
//! start, what a tlstap no longer running wrote down ([`remove_leftovers`]).
//!
//! Must stay true: only what was recorded is removed, and a filter only while it still runs
//! the program that was recorded (its id), so another tool's filter that took the same place
//! is left alone; a record of a live tlstap (same PID and start time) is never touched.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where records live: tmpfs, gone at reboot with what they describe.
pub const RECORD_DIR: &str = "/run/tlstap/tc";

/// One clsact filter as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterRecord {
    pub ingress: bool,
    pub handle: u32,
    pub priority: u32,
    pub prog_id: u32,
}

/// What one capture added to one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcAdditions {
    pub ifindex: i32,
    pub created_qdisc: bool,
    pub filters: Vec<FilterRecord>,
}

impl TcAdditions {
    fn to_text(&self) -> String {
        let mut text = format!("ifindex {}\nqdisc {}\n", self.ifindex, u8::from(self.created_qdisc));
        for f in &self.filters {
            let dir = if f.ingress { "ingress" } else { "egress" };
            text.push_str(&format!("filter {dir} {} {} {}\n", f.handle, f.priority, f.prog_id));
        }
        text
    }

    fn parse(text: &str) -> Option<TcAdditions> {
        let mut lines = text.lines();
        let ifindex = lines.next()?.strip_prefix("ifindex ")?.parse().ok()?;
        let created_qdisc = lines.next()?.strip_prefix("qdisc ")? == "1";
        let mut filters = Vec::new();
        for line in lines {
            let mut words = line.strip_prefix("filter ")?.split(' ');
            let ingress = match words.next()? {
                "ingress" => true,
                "egress" => false,
                _ => return None,
            };
            let mut num = || words.next()?.parse().ok();
            filters.push(FilterRecord { ingress, handle: num()?, priority: num()?, prog_id: num()? });
        }
        Some(TcAdditions { ifindex, created_qdisc, filters })
    }
}

/// This process's record; the file goes when this drops (after what it describes is removed).
#[derive(Debug)]
pub struct TcRecord {
    path: PathBuf,
}

impl TcRecord {
    /// Writes down `additions` for this process, in `dir` (RECORD_DIR but in tests).
    pub fn write(dir: &Path, additions: &TcAdditions) -> io::Result<TcRecord> {
        fs::create_dir_all(dir)?;
        let path = dir.join(own_name()?);
        fs::write(&path, additions.to_text())?;
        Ok(TcRecord { path })
    }
}

impl Drop for TcRecord {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// "PID-STARTTIME" of this process.
fn own_name() -> io::Result<String> {
    let pid = std::process::id();
    let start = start_time(pid).ok_or_else(|| io::Error::other("reading /proc/self/stat"))?;
    Ok(format!("{pid}-{start}"))
}

/// A process's start time (clock ticks since boot), field 22 of /proc/PID/stat.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process a record is named after still runs (same PID, same start time).
fn writer_alive(name: &str) -> bool {
    let Some((pid, start)) = name.split_once('-') else { return false };
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// Removes what tlstaps no longer running recorded in `dir`; returns one line per record
/// cleaned, saying what was removed.
pub fn remove_leftovers(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut done = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if writer_alive(&name) {
            continue;
        }
        let path = entry.path();
        if let Some(additions) = fs::read_to_string(&path).ok().as_deref().and_then(TcAdditions::parse) {
            done.push(remove(&additions));
        }
        let _ = fs::remove_file(&path);
    }
    done
}

/// Detaches the recorded filters still running their program, then the qdisc if it was made.
fn remove(additions: &TcAdditions) -> String {
    let mut removed = 0;
    for f in &additions.filters {
        let hook = hook(additions.ifindex, f.ingress);
        let mut opts = libbpf_sys::bpf_tc_opts {
            sz: size_of::<libbpf_sys::bpf_tc_opts>() as _,
            handle: f.handle,
            priority: f.priority,
            ..Default::default()
        };
        // SAFETY: `hook` and `opts` are initialised with their own sizes; libbpf reads them
        // and writes the query's answer into `opts` only.
        let found = unsafe { libbpf_sys::bpf_tc_query(&hook, &mut opts) } == 0 && opts.prog_id == f.prog_id;
        if found {
            let opts = libbpf_sys::bpf_tc_opts {
                sz: size_of::<libbpf_sys::bpf_tc_opts>() as _,
                handle: f.handle,
                priority: f.priority,
                ..Default::default()
            };
            // SAFETY: as above; detach only reads both.
            removed += usize::from(unsafe { libbpf_sys::bpf_tc_detach(&hook, &opts) } == 0);
        }
    }
    let mut line =
        format!("removed {removed} clsact filter(s) a killed tlstap left on interface index {}", additions.ifindex);
    if additions.created_qdisc {
        let mut qdisc = hook(additions.ifindex, true);
        qdisc.attach_point = libbpf_sys::BPF_TC_INGRESS | libbpf_sys::BPF_TC_EGRESS;
        // SAFETY: `qdisc` is initialised with its own size; libbpf only reads it.
        if unsafe { libbpf_sys::bpf_tc_hook_destroy(&mut qdisc) } == 0 {
            line.push_str(", and the clsact qdisc it had created");
        }
    }
    line
}

fn hook(ifindex: i32, ingress: bool) -> libbpf_sys::bpf_tc_hook {
    libbpf_sys::bpf_tc_hook {
        sz: size_of::<libbpf_sys::bpf_tc_hook>() as _,
        ifindex,
        attach_point: if ingress { libbpf_sys::BPF_TC_INGRESS } else { libbpf_sys::BPF_TC_EGRESS },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let a = TcAdditions {
            ifindex: 3,
            created_qdisc: true,
            filters: vec![
                FilterRecord { ingress: true, handle: 1, priority: 49152, prog_id: 77 },
                FilterRecord { ingress: false, handle: 1, priority: 49153, prog_id: 78 },
            ],
        };
        assert_eq!(TcAdditions::parse(&a.to_text()), Some(a));
        assert_eq!(TcAdditions::parse("ifindex x\nqdisc 1\n"), None);
        assert_eq!(TcAdditions::parse("ifindex 1\nqdisc 0\nfilter sideways 1 2 3\n"), None);
    }

    #[test]
    fn a_live_writer_is_recognised_and_a_dead_one_is_not() {
        assert!(writer_alive(&own_name().unwrap()));
        let pid = std::process::id();
        assert!(!writer_alive(&format!("{pid}-1")), "same PID, another start time: reused");
        assert!(!writer_alive("garbage"));
    }

    #[test]
    fn records_of_live_writers_stay() {
        let dir = std::env::temp_dir().join(format!("tlstap-tc-record-{}", std::process::id()));
        let additions = TcAdditions { ifindex: 1, created_qdisc: false, filters: Vec::new() };
        let record = TcRecord::write(&dir, &additions).unwrap();
        fs::write(dir.join("1-1"), "ifindex 1\nqdisc 0\n").unwrap(); // PID 1 did not start at tick 1
        assert_eq!(remove_leftovers(&dir).len(), 1, "only the dead writer's record is cleaned");
        assert!(record.path.exists(), "a live writer's record stays");
        drop(record);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        fs::remove_dir(&dir).unwrap();
    }
}

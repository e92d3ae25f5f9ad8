//! The one place that asks the running system what it allows: privileges, processes, clocks
//! (what the kernel's BPF can do is asked by tlstap_bpf::features). Everything here reads /proc
//! or calls libc and returns plain values.

use anyhow::{bail, Context as _, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails with the fix when this process may not load BPF programs and attach uprobes.
pub fn check_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .context("no CapEff line in /proc/self/status")?;
    let has = |cap: u32| effective & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!("permission denied: tlstap needs root (or CAP_BPF and CAP_PERFMON) to load BPF programs; run it with sudo")
}

/// Sends SIGCONT to a process BPF stopped at exec (--catch-exec). A process that is gone
/// meanwhile is no error.
pub fn continue_process(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill has no memory-safety preconditions; a stale pid fails with ESRCH, harmlessly.
    unsafe { libc::kill(pid, libc::SIGCONT) };
}

/// Whether process `pid` exists (a zombie counts as gone: it runs no code).
/// The process IDs in /proc now.
pub fn pids() -> std::io::Result<impl Iterator<Item = u32>> {
    Ok(std::fs::read_dir("/proc")?.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()))
}

/// How many processes run the file at `binary` now (its executable is the same inode).
pub fn processes_running(binary: &std::path::Path) -> usize {
    use std::os::unix::fs::MetadataExt as _;
    let (Ok(target), Ok(pids)) = (std::fs::metadata(binary), pids()) else { return 0 };
    pids.filter_map(|pid| std::fs::metadata(format!("/proc/{pid}/exe")).ok())
        .filter(|m| m.dev() == target.dev() && m.ino() == target.ino())
        .count()
}

pub fn process_exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any byte.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Whether tlstap runs in the initial PID namespace, whose process IDs BPF reports.
pub fn in_host_pid_namespace() -> bool {
    // PROC_PID_INIT_INO, the inode the kernel gives the initial PID namespace.
    std::fs::read_link("/proc/self/ns/pid").is_ok_and(|ns| ns.as_os_str() == "pid:[4026531836]")
}

/// The cgroup (v2) path of a process, from /proc/PID/cgroup.
pub fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string)
}

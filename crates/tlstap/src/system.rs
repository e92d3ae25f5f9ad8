//! The one place that asks the running system what it allows: privileges, kernel version,
//! clocks. Everything here reads /proc or calls libc and returns plain values.

use anyhow::{bail, Context as _, Result};

/// Kernel features tlstap relies on.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    pub release: (u32, u32),
}

/// bpf_loop (5.17) and uprobe BPF cookies (5.15) are needed; uprobe_multi (6.6) is optional.
const MIN_KERNEL: (u32, u32) = (5, 17);
const UPROBE_MULTI_KERNEL: (u32, u32) = (6, 6);

impl Kernel {
    pub fn detect() -> Result<Self> {
        let text =
            std::fs::read_to_string("/proc/sys/kernel/osrelease").context("reading /proc/sys/kernel/osrelease")?;
        Kernel::from_release(text.trim())
    }

    /// The kernel named by a release string (`uname -r`), or why tlstap cannot run on it.
    fn from_release(text: &str) -> Result<Self> {
        let release = parse_release(text).with_context(|| format!("kernel release {text:?} is not major.minor"))?;
        if release < MIN_KERNEL {
            bail!(
                "kernel {}.{} is too old: tlstap needs Linux {}.{} or newer (bpf_loop, uprobe cookies)",
                release.0,
                release.1,
                MIN_KERNEL.0,
                MIN_KERNEL.1
            );
        }
        Ok(Kernel { release })
    }

    pub fn has_uprobe_multi(&self) -> bool {
        self.release >= UPROBE_MULTI_KERNEL
    }
}

fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
        assert!((5, 15) < MIN_KERNEL && (6, 1) >= MIN_KERNEL);
    }

    #[test]
    fn old_kernels_are_refused_with_the_reason() {
        let err = Kernel::from_release("5.15.0-91-generic").unwrap_err().to_string();
        assert_eq!(err, "kernel 5.15 is too old: tlstap needs Linux 5.17 or newer (bpf_loop, uprobe cookies)");
        let err = Kernel::from_release("garbage").unwrap_err().to_string();
        assert_eq!(err, "kernel release \"garbage\" is not major.minor");
        let kernel = Kernel::from_release("6.1.0-13-amd64").unwrap();
        assert!(!kernel.has_uprobe_multi(), "6.1 attaches one perf-event link per offset");
        assert!(Kernel::from_release("6.18.44-fc-v782").unwrap().has_uprobe_multi());
    }
}

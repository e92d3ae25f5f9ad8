//! Bad input gets one clear error line and a non-zero exit, never a panic or a backtrace.
//! None of these needs BPF; the not-root case drops privileges itself, and the seccomp case
//! needs root only to get past the privilege check.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken expectations

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Runs tlstap and returns its stderr, asserting the error contract.
fn fails_with(cmd: &mut Command, expected: &str) -> String {
    let out = cmd.env("RUST_BACKTRACE", "1").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "exit status for {expected:?}; stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("tlstap: error: "), "{stderr:?}");
    assert!(stderr.contains(expected), "{stderr:?} should say {expected:?}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr:?}");
    stderr
}

fn gotls(binary: &Path) -> Command {
    let mut cmd = Command::new(TLSTAP);
    cmd.arg("gotls").arg("--elfpath").arg(binary);
    cmd
}

#[test]
fn missing_file() {
    fails_with(&mut gotls(Path::new("/nonexistent/server")), "cannot read /nonexistent/server");
}

#[test]
fn not_an_elf() {
    let dir = TempDir::new("not-elf");
    let path = dir.path("script.sh");
    std::fs::write(&path, "#!/bin/sh\necho hi\n").unwrap();
    fails_with(&mut gotls(&path), "not an ELF");
}

#[test]
fn not_a_go_binary() {
    fails_with(&mut gotls(Path::new("/bin/true")), "not a Go binary");
}

#[test]
fn go_without_crypto_tls() {
    fails_with(&mut gotls(&fixture("1.19", "exe", "notls")), "crypto/tls");
}

/// Go programs that use crypto/tls but that tlstap cannot hook: each refused by its reason.
#[test]
fn unsupported_go_builds_that_use_tls() {
    let i386 = fixture_for_arch("1.27", "exe", "tlsfixture", "386");
    fails_with(&mut gotls(&i386), "32-bit ELF (x86 (386)) is not supported");
    let riscv = fixture_for_arch("1.27", "exe", "tlsfixture", "riscv64");
    fails_with(&mut gotls(&riscv), "unsupported architecture");
    let shared = fixture("1.27", "c-shared", "tlsfixture");
    fails_with(&mut gotls(&shared), "a Go c-shared library");
}

/// gccgo's binaries run another runtime with another calling convention: refused by name.
#[test]
fn gccgo_binary() {
    let dir = TempDir::new("gccgo");
    let src = dir.path("main.go");
    std::fs::write(
        &src,
        "package main\n\nimport (\n\t\"crypto/tls\"\n\t\"fmt\"\n)\n\nfunc main() { fmt.Println(tls.VersionTLS13) }\n",
    )
    .unwrap();
    let binary = dir.path("gccgo-tls");
    let built = Command::new("gccgo").arg("-o").arg(&binary).arg(&src).output();
    let built = built.unwrap_or_else(|e| panic!("gccgo: {e} (scripts/deps.sh --test installs it)"));
    assert!(built.status.success(), "gccgo: {}", String::from_utf8_lossy(&built.stderr));
    fails_with(&mut gotls(&binary), "built by gccgo");
}

#[test]
fn foreign_architecture() {
    let arm64 = fixture_for_arch("1.19", "exe", "tlsfixture", "arm64");
    fails_with(&mut gotls(&arm64), "is built for arm64, but this tlstap runs on amd64");
}

/// The binary named with -e is analysed within the same deadline as host-wide discovery's (here
/// made to overrun on purpose): one error line and a non-zero exit once it passes, whether the
/// analysis was for a plan (--dry-run) or for a capture, not a tlstap stuck before capturing.
#[test]
fn an_elfpath_analysis_past_its_deadline_fails() {
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let slow = |cmd: &mut Command| {
        cmd.env("TLSTAP_TEST_ANALYSIS_DELAY_MS", "20000").env("TLSTAP_TEST_ANALYSIS_DEADLINE_MS", "300");
    };
    let started = std::time::Instant::now();
    let mut dry_run = gotls(&fixture);
    slow(dry_run.arg("--dry-run"));
    fails_with(&mut dry_run, "its analysis took over 300ms");
    assert!(started.elapsed() < Duration::from_secs(10), "given up at the deadline, not after the analysis");
    // A capture: spawned with a bound, since without one this would go on capturing.
    let dir = TempDir::new("elfpath-slow");
    let mut capture = gotls(&fixture);
    slow(&mut capture);
    capture.stdout(Stdio::null()).stderr(std::fs::File::create(dir.path("err")).unwrap());
    let mut capture = Proc::spawn(&mut capture, "tlstap -e (slow analysis)");
    assert_eq!(capture.wait_timeout(patience(10)).code(), Some(1));
    let said = std::fs::read_to_string(dir.path("err")).unwrap();
    assert_eq!(said.lines().count(), 1, "{said:?}");
    assert!(said.starts_with("tlstap: error: ") && said.contains("its analysis took over 300ms"), "{said:?}");
}

#[test]
fn dry_run_needs_a_target() {
    fails_with(Command::new(TLSTAP).args(["gotls", "--dry-run"]), "--dry-run needs --elfpath BINARY or --pid PID");
}

#[test]
fn catch_exec_needs_host_scope() {
    let fixture = fixture("1.19", "exe", "tlsfixture");
    fails_with(gotls(&fixture).arg("--catch-exec"), "--catch-exec applies to host-wide capture");
}

#[test]
fn bad_ringbuf_size() {
    let fixture = fixture("1.19", "exe", "tlsfixture");
    fails_with(gotls(&fixture).args(["--ringbuf-mb", "3"]), "power of two");
}

#[test]
fn not_root() {
    // Runs tlstap as `nobody` on a world-readable copy of the fixture.
    let dir = TempDir::new("not-root");
    let fixture = copy_binary(&fixture("1.19", "exe", "tlsfixture"), &dir, "server");
    let tlstap = copy_binary(Path::new(TLSTAP), &dir, "tlstap");
    for p in [&dir.0, &fixture, &tlstap] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(&tlstap)
        .args(["gotls", "--elfpath"])
        .arg(&fixture);
    fails_with(&mut cmd, "permission denied");
}

/// Root without the capabilities BPF needs (a container's usual root): the same one line.
#[test]
fn root_without_bpf_capabilities() {
    if !privileged() {
        return; // dropping capabilities from root needs root
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--inh-caps=-all", "--bounding-set=-bpf,-perfmon,-sys_admin"])
        .arg(TLSTAP)
        .args(["gotls", "--elfpath"])
        .arg(fixture("1.19", "exe", "tlsfixture"));
    fails_with(&mut cmd, "permission denied: tlstap needs root (or CAP_BPF and CAP_PERFMON)");
}

#[test]
fn keylog_mode_needs_a_file() {
    let fixture = fixture("1.19", "exe", "tlsfixture");
    fails_with(gotls(&fixture).args(["-m", "keylog"]), "-m keylog needs -k/--keylogfile FILE");
}

/// Installs a seccomp filter that fails bpf(2) with EPERM, as a container's default profile
/// does. Runs in the child between fork and exec.
fn deny_bpf_syscall() -> std::io::Result<()> {
    const SECCOMP_DATA_NR: u32 = 0; // offsetof(struct seccomp_data, nr)
    let mut filter = [
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: SECCOMP_DATA_NR,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_bpf as u32,
        },
        libc::sock_filter { code: libc::BPF_RET as u16, jt: 0, jf: 0, k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32 },
        libc::sock_filter { code: libc::BPF_RET as u16, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: prctl with these options takes plain integers and a pointer to `program`, which
    // points to `filter`; both outlive the calls, and the kernel copies the filter.
    let failed = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const libc::sock_fprog) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn bpf_forbidden_by_seccomp() {
    if !privileged() {
        return;
    }
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let mut cmd = gotls(&fixture);
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe, on memory of its own stack frame.
    unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, deny_bpf_syscall) };
    let stderr = fails_with(&mut cmd, "loading the BPF programs into the kernel");
    assert!(stderr.contains("seccomp") && stderr.contains("Operation not permitted"), "{stderr:?}");
}

/// A key log path that is someone else's symlink could point the secrets anywhere: refused.
#[test]
fn keylog_through_a_foreign_symlink() {
    if !privileged() {
        return; // making a symlink owned by another user needs root
    }
    let dir = TempDir::new("foreign-link");
    let link = dir.path("keys.log");
    std::os::unix::fs::symlink(dir.path("elsewhere"), &link).unwrap();
    let c_link = std::ffi::CString::new(link.to_str().unwrap()).unwrap();
    // SAFETY: lchown has no memory-safety preconditions; the path is a valid C string.
    assert_eq!(unsafe { libc::lchown(c_link.as_ptr(), 65534, 65534) }, 0);
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let mut cmd = gotls(&fixture);
    cmd.args(["-m", "keylog", "-k"]).arg(&link);
    fails_with(&mut cmd, "refusing to follow a symlink owned by uid 65534");
    assert!(!dir.path("elsewhere").exists(), "nothing written through the link");
}

/// In a PID namespace of its own, --catch-exec would continue held processes by PIDs that are
/// not theirs: refused before anything is loaded.
#[test]
fn catch_exec_outside_the_host_pid_namespace_is_refused() {
    if !privileged() {
        return;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", TLSTAP, "gotls", "--catch-exec"]);
    fails_with(&mut cmd, "--catch-exec needs tlstap in the host's PID namespace");
}

/// A reader that goes away (`tlstap … | head`) ends tlstap quietly: exit 0, nothing on stderr.
#[test]
fn a_closed_output_ends_quietly() {
    let mut child = Command::new(TLSTAP)
        .args(["gotls", "--dry-run", "-e"])
        .arg(fixture("1.27", "exe", "tlsfixture"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // closed before tlstap writes a line
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The same mid-capture: the output closed before the attach record ends the capture at once,
/// quietly (exit 0, nothing on stderr).
#[test]
fn a_capture_whose_output_closes_ends_quietly() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("closed-output");
    let binary = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "srv");
    let mut child = Command::new(TLSTAP)
        .args(["gotls", "--raw", "-e"])
        .arg(&binary)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

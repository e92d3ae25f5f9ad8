//! Test helpers shared by the integration tests: golden files, the skip-or-fail rule for tests
//! that need tools or root, and bounded child processes that die with the test.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Compares `actual` with `tests/golden/<name>`; `TLSTAP_BLESS=1` rewrites the file instead.
pub fn golden(name: &str, actual: &[u8]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("TLSTAP_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (TLSTAP_BLESS=1 creates it)", path.display()));
    if expected == actual {
        return;
    }
    match (std::str::from_utf8(&expected), std::str::from_utf8(actual)) {
        (Ok(e), Ok(a)) => {
            panic!("{} differs (TLSTAP_BLESS=1 rewrites it)\n--- expected\n{e}\n--- actual\n{a}", path.display())
        }
        _ => {
            let at = expected.iter().zip(actual).position(|(e, a)| e != a).unwrap_or(expected.len().min(actual.len()));
            panic!(
                "{} differs (TLSTAP_BLESS=1 rewrites it): {} bytes expected, {} actual, first difference at byte {at:#x}",
                path.display(),
                expected.len(),
                actual.len()
            );
        }
    }
}

/// Path of a golden file.
pub fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// True when a test that cannot run must fail rather than skip (CI sets it).
pub fn must_run() -> bool {
    std::env::var("TLSTAP_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}

/// Returns false (after printing why) when the test should be skipped; panics instead when
/// [`must_run`]. Checks the tools are on PATH and, if `root`, that we are root.
pub fn prerequisites(test: &str, tools: &[&str], root: bool) -> bool {
    let mut missing: Vec<String> = tools.iter().filter(|t| !on_path(t)).map(|t| t.to_string()).collect();
    if root && !is_root() {
        missing.push("root".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{test}: needs {} (apt-get install tshark curl openssl; run as root)", missing.join(", "));
    assert!(!must_run(), "{reason}, and TLSTAP_REQUIRE_PRIVILEGED=1 forbids skipping");
    // Straight to stderr, not eprintln!: libtest hides captured output of passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED {reason}");
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing behind.
#[derive(Debug)]
pub struct Guard {
    pub child: Option<Child>,
    /// Lines of the child's stderr, when captured with [`Guard::spawn_watching_stderr`].
    pub stderr_lines: Option<mpsc::Receiver<String>>,
}

impl Guard {
    pub fn spawn(cmd: &mut Command) -> Guard {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Guard { child: Some(child), stderr_lines: None }
    }

    /// Spawns with stderr drained by a thread into a channel of lines.
    pub fn spawn_watching_stderr(cmd: &mut Command) -> Guard {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Guard { child: Some(child), stderr_lines: Some(rx) }
    }

    /// Waits up to `timeout` for a stderr line containing `needle`; panics with what was seen.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        let rx = self.stderr_lines.as_ref().expect("stderr not watched");
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no {needle:?} on stderr within {timeout:?}; saw {seen:#?}");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGINT (a clean stop for tshark) and waits up to `timeout` for the exit.
    pub fn interrupt_and_wait(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let mut child = self.child.take().expect("already waited");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("pid {pid} did not stop within {timeout:?} of SIGINT");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The result of [`run`].
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion within `timeout` (killed and panicking beyond it).
pub fn run(cmd: &mut Command, timeout: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let mut guard = Guard { child: Some(child), stderr_lines: None };
    let deadline = Instant::now() + timeout;
    let status = loop {
        let child = guard.child.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            guard.child = None;
            break status;
        }
        assert!(Instant::now() < deadline, "{cmd:?} still running after {timeout:?}");
        thread::sleep(Duration::from_millis(10));
    };
    Ran { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// Like [`run`], but panics unless the command succeeded; returns its stdout.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> String {
    let ran = run(cmd, timeout);
    assert!(ran.status.success(), "{cmd:?} failed: {}\n{}", ran.status, ran.stderr);
    ran.stdout
}

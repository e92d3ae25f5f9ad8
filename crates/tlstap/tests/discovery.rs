//! Host-wide capture (no target): processes found at start and new ones as they exec, in other
//! mount namespaces too; nothing left in the kernel afterwards. Privileged.
//!
//! The tests of this file run one at a time (a lock), so that "no tlstap link left" is not
//! confused by another test's capture.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken expectations

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the three kinds of server the issue names, each with a one-request client that exits,
/// all started after tlstap; returns (capture, [(server pid, manifest), (client pid, manifest)]).
fn three_servers_and_short_clients(dir: &TempDir, extra: &[&str]) -> (Capture, Vec<(u32, std::path::PathBuf)>) {
    let tlstap = Tlstap::start_host(dir, extra);
    let client_fixture = fixture("1.27", "exe", "tlsfixture");
    let mut hooked = Vec::new();
    for (version, variant) in [("1.27", "pie-strip"), ("1.15", "exe"), ("1.19", "cgo")] {
        let name = format!("srv-{version}-{variant}");
        let server_bin = copy_binary(&fixture(version, variant, "tlsfixture"), dir, &name);
        let client_bin = copy_binary(&client_fixture, dir, &format!("cli-{version}-{variant}"));
        let server_manifest = dir.path(&format!("{name}.jsonl"));
        let client_manifest = dir.path(&format!("{name}-client.jsonl"));
        let server = Server::start(&server_bin, &server_manifest, &[]);
        let client_pid =
            run_client(&client_bin, &server.addr, &client_manifest, &["--requests", "1", "--sizes", "100"]);
        hooked.push((server.proc.pid(), server_manifest));
        hooked.push((client_pid, client_manifest));
        server.stop();
    }
    std::thread::sleep(Duration::from_millis(300)); // the exits reach tlstap
    (tlstap.stop(), hooked)
}

#[test]
fn catch_exec_captures_new_processes_from_their_first_byte() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-catch");
    let (capture, hooked) = three_servers_and_short_clients(&dir, &["--catch-exec"]);
    for (pid, manifest) in &hooked {
        assert_capture_matches(&capture, manifest, *pid);
    }
    // Every binary of this test was released again when its process exited (other Go TLS
    // programs on the host are hooked too, and may still run).
    let ours = |kind: &str| -> Vec<String> {
        let mut paths: Vec<String> = capture
            .records
            .iter()
            .filter(|r| r["type"] == kind)
            .filter_map(|r| r["binary"].as_str())
            .filter(|b| b.starts_with(dir.0.to_str().unwrap()))
            .map(str::to_string)
            .collect();
        paths.sort();
        paths
    };
    assert_eq!(ours("attach").len(), 6, "three servers and three clients hooked: {:?}", ours("attach"));
    assert_eq!(ours("attach"), ours("detach"), "each binary detached after its last process");
    let latencies: Vec<&str> = capture.stderr.lines().filter(|l| l.contains("after exec")).collect();
    eprintln!("exec -> probes live:\n{}", latencies.join("\n"));
}

#[test]
fn without_catch_exec_new_processes_are_found_measurement() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-nocatch");
    let (capture, hooked) = three_servers_and_short_clients(&dir, &[]);
    // A measurement, not a verdict: how much of each process was seen without holding it.
    for (pid, manifest) in &hooked {
        let made = manifest_calls(manifest).len();
        let seen = capture.records.iter().filter(|r| r["type"] == "data" && r["pid"] == *pid).count();
        eprintln!("pid {pid}: {seen} of {made} calls captured without --catch-exec ({})", manifest.display());
    }
    // Reads begun before their process was hooked return without entry state: counted loss.
    eprintln!("{}", capture.stats());
}

#[test]
fn non_go_and_go_without_tls_are_ignored_quietly() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-quiet");
    let notls = copy_binary(&fixture("1.19", "exe", "notls"), &dir, "notls");
    // --catch-exec holds these short-lived processes until tlstap has looked at them.
    let tlstap = Tlstap::start_host(&dir, &["--catch-exec"]);
    assert!(Command::new(&notls).status().unwrap().success());
    assert!(Command::new("/bin/true").status().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let capture = tlstap.stop();
    let about = |name: &str| capture.stderr.lines().filter(|l| l.contains(name)).count();
    assert_eq!(about("notls"), 1, "one verbose line for the Go binary without TLS:\n{}", capture.stderr);
    assert!(about("error") == 0, "{}", capture.stderr);
    assert!(!capture.records.iter().any(|r| r["type"] == "attach" && r["binary"].as_str().unwrap().contains("notls")));
}

#[test]
fn a_process_in_its_own_mount_namespace_is_captured() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-mntns");
    let fixture = fixture("1.27", "pie-strip", "tlsfixture");
    let client_bin = copy_binary(&fixture, &dir, "client");
    let staged = copy_binary(&fixture, &dir, "staged");
    let manifest = dir.path("server.jsonl");
    let tlstap = Tlstap::start_host(&dir, &["--catch-exec"]);
    // The server's binary exists only on a tmpfs private to its mount namespace.
    let script = format!(
        "set -e; m=$(mktemp -d); mount -t tmpfs none $m; cp {staged} $m/private-server; exec $m/private-server server --manifest {manifest}",
        staged = staged.display(),
        manifest = manifest.display()
    );
    let mut unshare = Command::new("unshare");
    unshare.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let server = Server::start_with(&mut unshare);
    let client_pid =
        run_client(&client_bin, &server.addr, &dir.path("client.jsonl"), &["--requests", "2", "--sizes", "50"]);
    let server_pid = server.proc.pid();
    let _ = client_pid;
    let capture = tlstap.stop();
    server.stop();
    assert_capture_matches(&capture, &manifest, server_pid);
    let attach = capture
        .records
        .iter()
        .find(|r| r["type"] == "attach" && r["binary"].as_str().unwrap().ends_with("private-server"));
    assert!(attach.is_some(), "the server was hooked through /proc/PID/exe");
}

#[test]
fn nothing_is_left_in_the_kernel_after_exit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    // The ids of the loaded programs named like tlstap's.
    let ours = || -> Vec<u64> {
        let out = Command::new("bpftool").args(["prog", "show", "-j"]).output().expect("bpftool");
        let progs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
        progs
            .iter()
            .filter(|p| ["go_tls_multi", "go_tls_single", "on_exec", "on_exit"].iter().any(|n| p["name"] == *n))
            .filter_map(|p| p["id"].as_u64())
            .collect()
    };
    let loaded = |ids: &[u64]| -> Vec<u64> {
        ids.iter()
            .copied()
            .filter(|id| {
                Command::new("bpftool")
                    .args(["prog", "show", "id", &id.to_string()])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .collect()
    };
    let dir = TempDir::new("discovery-leftovers");
    let server_bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "server");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let before = ours();
    let tlstap = Tlstap::start_host(&dir, &[]);
    let ids: Vec<u64> = ours().into_iter().filter(|id| !before.contains(id)).collect();
    assert!(ids.len() >= 3, "tlstap's uprobe and tracepoint programs are loaded while it runs: {ids:?}");
    let links_before = Command::new("bpftool").args(["link", "show"]).output().unwrap().stdout;
    assert!(!links_before.is_empty(), "tlstap's links exist while it runs");
    tlstap.stop();
    server.stop();
    // The kernel frees programs once their last link is gone, after an RCU grace period.
    // A program stays loaded while any link to it does, so no program means no link either.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !loaded(&ids).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(loaded(&ids), Vec::<u64>::new(), "tlstap's programs (and so its links) are gone after it exits");
}

//! Host-wide capture (no target): processes found at start and new ones as they exec, in other
//! mount namespaces too; nothing left in the kernel afterwards. Privileged.
//!
//! The tests of this file run one at a time (a lock), so that "no tlstap link left" is not
//! confused by another test's capture.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken expectations

mod common;

use std::path::Path;
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
    // Each event names its process's cgroup (v2 path), short-lived clients' too.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 path");
    for (pid, manifest) in &hooked {
        assert_capture_matches(&capture, manifest, *pid);
        let events = capture.records.iter().filter(|r| r["type"] == "data" && r["pid"] == *pid);
        assert!(events.clone().all(|r| r["cgroup"] == own), "cgroup of pid {pid}");
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

/// The same on the oldest kernel paths (tests/fallbacks.rs): exec records and held processes
/// through perf buffers, binaries told apart by inode, all three at once.
#[test]
fn catch_exec_on_the_oldest_kernel_paths() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-catch-old");
    let mut args = vec!["--catch-exec"];
    for feature in ["ringbuf", "bpf-loop", "cookies", "fetch-atomics", "uprobe-multi"] {
        args.extend(["--disable-feature", feature]);
    }
    let (capture, hooked) = three_servers_and_short_clients(&dir, &args);
    for (pid, manifest) in &hooked {
        assert_capture_matches(&capture, manifest, *pid);
    }
}

#[test]
fn without_catch_exec_new_processes_are_found_measurement() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-nocatch");
    let (capture, hooked) = three_servers_and_short_clients(&dir, &[]);
    // The servers run long enough to be hooked whatever the timing.
    let attached: Vec<&str> =
        capture.records.iter().filter(|r| r["type"] == "attach").filter_map(|r| r["binary"].as_str()).collect();
    for name in ["srv-1.27-pie-strip", "srv-1.15-exe", "srv-1.19-cgo"] {
        assert!(attached.iter().any(|b| b.ends_with(name)), "{name} hooked: {attached:?}");
    }
    // A measurement, not a verdict: how much of each process was seen without holding it.
    // Written where scripts/test.sh prints it after the suite (cargo test hides passing output).
    let mut report = String::from("host-wide capture without --catch-exec (processes started after tlstap):\n");
    for (pid, manifest) in &hooked {
        let made = manifest_calls(manifest).len();
        let seen = capture.records.iter().filter(|r| r["type"] == "data" && r["pid"] == *pid).count();
        let name = manifest.file_stem().unwrap().to_string_lossy();
        report.push_str(&format!("  {name}: {seen} of {made} calls captured\n"));
    }
    // Reads begun before their process was hooked return without entry state: counted loss.
    report.push_str(&format!("  lost by cause: {}\n", capture.stats()["lost_by_cause"]));
    write_measurement("discovery-without-catch-exec", &report);
}

#[test]
fn non_go_and_go_without_tls_are_ignored_quietly() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-quiet");
    let notls = copy_binary(&fixture("1.19", "exe", "notls"), &dir, "notls");
    let not_go = copy_binary(Path::new("/bin/true"), &dir, "not-go");
    // --catch-exec holds these short-lived processes until tlstap has looked at them.
    let tlstap = Tlstap::start_host(&dir, &["--catch-exec"]);
    // Twice each: a file is analysed once, whatever the outcome, so one line each.
    for _ in 0..2 {
        assert!(Command::new(&notls).status().unwrap().success());
        assert!(Command::new(&not_go).status().unwrap().success());
    }
    std::thread::sleep(Duration::from_millis(300));
    let capture = tlstap.stop();
    let about = |name: &Path| capture.stderr.lines().filter(|l| l.contains(name.to_str().unwrap())).count();
    assert_eq!(about(&notls), 1, "one verbose line for the Go binary without TLS:\n{}", capture.stderr);
    assert_eq!(about(&not_go), 1, "one verbose line for the non-Go binary:\n{}", capture.stderr);
    assert!(about(Path::new("error")) == 0, "{}", capture.stderr);
    let ours = dir.0.to_str().unwrap();
    assert!(
        !capture.records.iter().any(|r| r["type"] == "attach" && r["binary"].as_str().unwrap().starts_with(ours)),
        "nothing of this test hooked"
    );
}

/// --comm selects processes by name host-wide, and narrows --elfpath too (filters compose).
#[test]
fn comm_selects_processes_and_composes_with_elfpath() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-comm");
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let (wanted_bin, other_bin) = (copy_binary(&fixture, &dir, "srv-wanted"), copy_binary(&fixture, &dir, "srv-other"));
    let client_bin = copy_binary(&fixture, &dir, "client");
    let (wanted_manifest, other_manifest) = (dir.path("wanted.jsonl"), dir.path("other.jsonl"));
    let wanted = Server::start(&wanted_bin, &wanted_manifest, &[]);
    let other = Server::start(&other_bin, &other_manifest, &[]);
    let talk = |addr: &str, name: &str| {
        run_client(&client_bin, addr, &dir.path(name), &["--requests", "2", "--sizes", "40"]);
    };

    let tlstap = Tlstap::start_host(&dir, &["--comm", "srv-wanted"]);
    talk(&wanted.addr, "c1.jsonl");
    talk(&other.addr, "c2.jsonl");
    let capture = tlstap.stop();
    let attached: Vec<&str> =
        capture.records.iter().filter(|r| r["type"] == "attach").filter_map(|r| r["binary"].as_str()).collect();
    assert_eq!(attached, vec![wanted_bin.to_str().unwrap()], "only the named process's binary is hooked");
    assert_capture_matches(&capture, &wanted_manifest, wanted.proc.pid());
    let pids: std::collections::HashSet<u64> =
        capture.records.iter().filter(|r| r["type"] == "data").filter_map(|r| r["pid"].as_u64()).collect();
    assert_eq!(pids, [u64::from(wanted.proc.pid())].into(), "no other process's data");

    // -e names one binary, --comm another process name: nothing of it passes.
    let tlstap = Tlstap::start(&dir, &["-e", other_bin.to_str().unwrap(), "--comm", "srv-wanted"]);
    talk(&other.addr, "c3.jsonl");
    let capture = tlstap.stop();
    assert_eq!(capture.data("write").len() + capture.data("read").len(), 0, "--comm narrows --elfpath");
    wanted.stop();
    other.stop();
}

/// A binary whose last process exited is released while tlstap goes on (after --linger), and
/// hooked again when it runs again.
#[test]
fn a_binary_is_released_when_its_last_process_exits() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-linger");
    let server_bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "lingering");
    let client_bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "client");
    let tlstap = Tlstap::start_host(&dir, &["--linger", "0", "--comm", "lingering"]);
    let ours = |kind: &str| {
        read_jsonl(&tlstap.out)
            .iter()
            .filter(|r| r["type"] == kind && r["binary"] == server_bin.to_str().unwrap())
            .count()
    };
    let wait_for = |kind: &str, n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ours(kind) < n {
            assert!(std::time::Instant::now() < deadline, "no {kind} record #{n} while tlstap runs");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for round in 1..=2 {
        let manifest = dir.path(&format!("server-{round}.jsonl"));
        let server = Server::start(&server_bin, &manifest, &[]);
        wait_for("attach", round);
        run_client(&client_bin, &server.addr, &dir.path("client.jsonl"), &["--requests", "1", "--sizes", "10"]);
        server.stop();
        // Released while tlstap still runs: the record comes before any stop.
        wait_for("detach", round);
    }
    let capture = tlstap.stop();
    assert_eq!(capture.stats()["lost"], 0);
}

/// An output error ends the capture (one line, non-zero exit) but never leaves a process that
/// --catch-exec held stopped.
#[test]
fn catch_exec_continues_held_processes_when_output_fails() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-full");
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let server_bin = copy_binary(&fixture, &dir, "server");
    let client_bin = copy_binary(&fixture, &dir, "held-client");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let stderr = dir.path("tlstap.stderr");
    let mut tlstap = Proc::spawn(
        Command::new(TLSTAP)
            .args(["gotls", "-v", "--catch-exec", "--comm", "held-client", "--format", "jsonl", "-o", "/dev/full"])
            .stderr(std::fs::File::create(&stderr).unwrap()),
        "tlstap",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&stderr).unwrap().contains("watching for new processes") {
        assert!(std::time::Instant::now() < deadline, "tlstap not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Held at exec, hooked (the attach record cannot be written), continued: it completes.
    for i in 0..3 {
        run_client(&client_bin, &server.addr, &dir.path(&format!("client-{i}.jsonl")), &["--requests", "1"]);
    }
    let status = tlstap.wait_timeout(Duration::from_secs(30));
    let said = std::fs::read_to_string(&stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    let errors: Vec<&str> = said.lines().filter(|l| l.starts_with("tlstap: error")).collect();
    assert_eq!(errors.len(), 1, "{said}");
    assert!(errors[0].contains("No space left on device"), "{said}");
    server.stop();
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
    let dir = TempDir::new("discovery-leftovers");
    let server_bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "server");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let tlstap = Tlstap::start_host(&dir, &[]);
    let ids = program_ids_of(tlstap.proc.pid());
    assert!(ids.len() >= 3, "tlstap's uprobe and tracepoint programs are loaded while it runs: {ids:?}");
    let links_before = Command::new("bpftool").args(["link", "show"]).output().unwrap().stdout;
    assert!(!links_before.is_empty(), "tlstap's links exist while it runs");
    tlstap.stop();
    server.stop();
    assert_programs_unloaded(&ids);
}

/// Ready, host-wide and for one binary: a ready record (JSON Lines) and a ready line (stderr)
/// once the probes are live, counting what is hooked; with nothing to hook, at once.
#[test]
fn ready_is_said_in_every_scope() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-ready");
    let bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "srv-ready");
    let server = Server::start(&bin, &dir.path("manifest.jsonl"), &[]);
    let ready = |tlstap: Tlstap| {
        let capture = tlstap.stop();
        let ready: Vec<_> = capture.records.iter().filter(|r| r["type"] == "ready").collect();
        assert_eq!(ready.len(), 1, "{:?}", capture.records);
        assert!(capture.stderr.contains("tlstap: ready: "), "{}", capture.stderr);
        (ready[0]["binaries"].as_u64(), ready[0]["processes"].as_u64())
    };
    let host = Tlstap::start_host(&dir, &["--comm", "srv-ready"]);
    assert_eq!(ready(host), (Some(1), Some(1)), "host-wide");
    let one = Tlstap::start(&dir, &["-e", bin.to_str().unwrap()]);
    assert_eq!(ready(one), (Some(1), Some(1)), "--elfpath");
    let none = Tlstap::start_host(&dir, &["--comm", "no-such-command"]);
    assert_eq!(ready(none), (Some(0), Some(0)), "nothing to hook");
    server.stop();
}

/// A Go TLS program tlstap cannot hook (here its `(*Conn).Read` is damaged: no RET left to
/// probe) is missing from the capture: the stats record and the summary say so, not only -v.
#[test]
fn go_tls_programs_left_unhooked_are_counted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-unhooked");
    let bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "srv-damaged");
    let mut data = std::fs::read(&bin).unwrap();
    let (start, len) = {
        let go = goelf::GoBinary::parse(&data).unwrap();
        let read = go.function("crypto/tls.(*Conn).Read").unwrap();
        (go.code_file_offset(read.vaddr).unwrap() as usize, read.size as usize)
    };
    data[start..start + len].fill(0xcc); // int3 all through: it runs until a Read, never one here
    std::fs::write(&bin, &data).unwrap();
    let server = Server::start(&bin, &dir.path("manifest.jsonl"), &[]);
    let tlstap = Tlstap::start_host(&dir, &["--comm", "srv-damaged"]);
    let capture = tlstap.stop();
    server.stop();
    let stats = capture.records.iter().find(|r| r["type"] == "stats").unwrap();
    assert_eq!(stats["binaries_not_hooked"], 1, "{stats}");
    assert!(capture.stderr.contains(", 1 Go TLS binaries not hooked (-v says why)"), "{}", capture.stderr);
    assert!(capture.stderr.contains("has no RET instruction"), "-v says why: {}", capture.stderr);
}

/// Host-wide tlstap with `args` and test-only environment `env` (jsonl to `out`, stderr to
/// `err`), waited for until its ready record.
fn host_tlstap_with_env(args: &[&str], env: &[(&str, &str)], out: &Path, err: &Path) -> Proc {
    let mut cmd = Command::new(TLSTAP);
    cmd.arg("gotls").args(args).args(["--raw", "--format", "jsonl", "-o"]).arg(out).envs(env.iter().copied());
    let tlstap = Proc::spawn(cmd.stderr(std::fs::File::create(err).unwrap()), "tlstap");
    let deadline = std::time::Instant::now() + patience(30);
    while !read_jsonl(out).iter().any(|r| r["type"] == "ready") {
        assert!(std::time::Instant::now() < deadline, "not ready: {}", std::fs::read_to_string(err).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    tlstap
}

/// A fixture server started while a tlstap may hold it at exec (so its LISTEN line is read later).
fn spawn_held_server(bin: &Path, dir: &TempDir) -> Proc {
    let mut cmd = Command::new(bin);
    cmd.args(["server", "--manifest"]).arg(dir.path("m.jsonl")).stdout(std::process::Stdio::piped());
    Proc::spawn(&mut cmd, "server")
}

/// The state letter of a process (/proc/PID/stat's third field).
fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')').unwrap().1.trim_start().chars().next().unwrap()
}

/// A tlstap killed (SIGKILL) while --catch-exec held a process leaves it stopped; the next
/// tlstap to start continues it (from the list the killed one pinned) and removes the list.
#[test]
fn a_process_a_killed_tlstap_held_is_continued_by_the_next() {
    use std::io::BufRead as _;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-stranded");
    let bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "srv-stranded");
    let (out, err) = (dir.path("first.jsonl"), dir.path("first.err"));
    let args = ["--catch-exec", "--comm", "srv-stranded"];
    let mut first = host_tlstap_with_env(&args, &[("TLSTAP_TEST_CONTINUE_DELAY_MS", "60000")], &out, &err);
    let deadline = std::time::Instant::now() + patience(30);
    let mut server = spawn_held_server(&bin, &dir);
    while !std::fs::read_to_string(&err).unwrap().contains("holding pid") {
        assert!(std::time::Instant::now() < deadline, "not held: {}", std::fs::read_to_string(&err).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    first.signal(libc::SIGKILL);
    first.wait_timeout(patience(10));
    let pinned = || {
        std::fs::read_dir("/sys/fs/bpf")
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy() == format!("tlstap-held-{}", first.pid()))
    };
    assert_eq!(process_state(server.pid()), 'T', "held and stranded by the kill");
    assert!(pinned(), "the killed run's list is pinned");
    let next = Tlstap::start_host(&dir, &["--comm", "no-such-command"]);
    let capture = next.stop();
    assert!(capture.stderr.contains("continued 1 processes a killed tlstap"), "{}", capture.stderr);
    assert!(!pinned(), "the list is removed");
    // Running again: it gets to listen.
    let mut line = String::new();
    std::io::BufReader::new(server.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("LISTEN "), "{line:?}");
    assert_ne!(process_state(server.pid()), 'T');
    server.signal(libc::SIGTERM);
    server.wait_timeout(patience(10));
}

/// Whatever holds the capture loop up (here a test-only stall before it continues a held
/// process), the watchdog continues a process held past the deadline.
#[test]
fn a_held_process_is_continued_by_the_deadline_whatever_blocks_the_loop() {
    use std::io::BufRead as _;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-watchdog");
    let bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "srv-watchdog");
    let (out, err) = (dir.path("out.jsonl"), dir.path("err"));
    let env = [("TLSTAP_TEST_CONTINUE_DELAY_MS", "60000"), ("TLSTAP_TEST_HELD_DEADLINE_MS", "1000")];
    let mut tlstap = host_tlstap_with_env(&["--catch-exec", "--comm", "srv-watchdog"], &env, &out, &err);
    let mut server = spawn_held_server(&bin, &dir);
    // The loop is stalled for a minute: only the watchdog can let the server get to listen.
    let started = std::time::Instant::now();
    let mut line = String::new();
    std::io::BufReader::new(server.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("LISTEN "), "{line:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "continued by the deadline, not by the stalled loop");
    assert!(std::fs::read_to_string(&err).unwrap().contains("holding pid"), "it was held");
    tlstap.signal(libc::SIGKILL);
    tlstap.wait_timeout(patience(10));
    server.signal(libc::SIGTERM);
    server.wait_timeout(patience(10));
}

/// An analysis that overruns its deadline (here made slow on purpose) is given up: the binary is
/// skipped with one line under -v, counted as not hooked, and the capture goes on without it.
#[test]
fn an_analysis_past_its_deadline_is_given_up_and_counted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !privileged() {
        return;
    }
    let dir = TempDir::new("discovery-slow");
    let bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "srv-slow");
    let server = Server::start(&bin, &dir.path("manifest.jsonl"), &[]);
    let (out, err) = (dir.path("out.jsonl"), dir.path("err"));
    let env = [("TLSTAP_TEST_ANALYSIS_DELAY_MS", "5000"), ("TLSTAP_TEST_ANALYSIS_DEADLINE_MS", "300")];
    let mut tlstap = host_tlstap_with_env(&["-v", "--comm", "srv-slow"], &env, &out, &err);
    tlstap.signal(libc::SIGINT);
    assert!(tlstap.wait_timeout(patience(30)).success());
    server.stop();
    let records = read_jsonl(&out);
    let ready = records.iter().find(|r| r["type"] == "ready").unwrap();
    assert_eq!(ready["binaries"], 0, "{ready}");
    let stats = records.iter().find(|r| r["type"] == "stats").unwrap();
    assert_eq!(stats["binaries_not_hooked"], 1, "{stats}");
    let said = std::fs::read_to_string(&err).unwrap();
    let lines: Vec<&str> = said.lines().filter(|l| l.contains("analysis took over 300ms")).collect();
    assert_eq!(lines.len(), 1, "{said}");
}

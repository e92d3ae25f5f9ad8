//! Completeness: any payload size byte-exact, nothing lost under load, and the BPF-side
//! process filters. Privileged: real BPF on real Go programs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken expectations

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use common::*;

/// A program run in two steps: it says `ready` on stdout and waits for a line on stdin, then
/// does its work, says `done` and exits (so a test can attach tlstap in between).
struct Stepped {
    proc: Proc,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Stepped {
    fn start(cmd: &mut Command, what: &str, ready: &str) -> Stepped {
        let mut proc = Proc::spawn(cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()), what);
        let stdout = std::io::BufReader::new(proc.child.stdout.take().unwrap());
        let mut stepped = Stepped { proc, stdout };
        stepped.expect(ready);
        stepped
    }

    fn expect(&mut self, said: &str) {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.stdout, &mut line).unwrap();
        assert_eq!(line.trim_end(), said, "{} said", self.proc.what);
    }

    /// Lets it go on, and waits for it to finish.
    fn go(mut self, done: &str) {
        std::io::Write::write_all(&mut self.proc.child.stdin.take().unwrap(), b"\n").unwrap();
        self.expect(done);
        assert!(self.proc.wait_timeout(std::time::Duration::from_secs(10)).success(), "{} exit", self.proc.what);
    }
}

/// Captured calls of `pid` in one direction, concatenated, and whether any was truncated.
fn stream(capture: &Capture, direction: &str, pid: u32) -> (Vec<u8>, usize, bool) {
    let events = capture.data(direction);
    let mine: Vec<_> = events.iter().filter(|(p, _, _)| *p == u64::from(pid)).collect();
    let truncated = mine.iter().any(|(_, _, r)| r["truncated"] != false);
    (mine.iter().flat_map(|(_, d, _)| d.iter().copied()).collect(), mine.len(), truncated)
}

/// The manifest's calls in one direction, concatenated, and how many there were.
fn manifest_stream(manifest: &std::path::Path, direction: &str) -> (Vec<u8>, usize) {
    let calls: Vec<_> = manifest_calls(manifest).into_iter().filter(|c| c.1 == direction).collect();
    (calls.iter().flat_map(|c| c.2.iter().copied()).collect(), calls.len())
}

fn big_bodies(write_chunk: &str, hook_server: bool) {
    let side = if hook_server { "server" } else { "client" };
    let dir = TempDir::new(&format!("big-{write_chunk}-{side}"));
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let (server_manifest, client_manifest) = (dir.path("server.jsonl"), dir.path("client.jsonl"));
    let server = Server::start(&server_bin, &server_manifest, &[]);
    let hooked = if hook_server { &server_bin } else { &client_bin };
    // One call must fit the ring whole (BPF writes it faster than anyone reads): the default
    // 8 MiB ring is too small for an 8 MiB body in one Write.
    let tlstap = Tlstap::start(&dir, &["-e", hooked.to_str().unwrap(), "--ringbuf-mb", "32"]);
    let args = ["--requests", "3", "--sizes", "65536,1048576,8388608", "--write-chunk", write_chunk];
    let client_pid = run_client(&client_bin, &server.addr, &client_manifest, &args);
    let server_pid = server.proc.pid();
    let capture = tlstap.stop();
    server.stop();

    let (pid, manifest) = if hook_server { (server_pid, &server_manifest) } else { (client_pid, &client_manifest) };
    for direction in ["write", "read"] {
        let (want, want_calls) = manifest_stream(manifest, direction);
        let (got, got_calls, truncated) = stream(&capture, direction, pid);
        assert!(!truncated, "{side} {direction}: a call was truncated");
        assert_eq!(got_calls, want_calls, "{side} {direction}: calls");
        assert_eq!(got.len(), want.len(), "{side} {direction}: bytes");
        assert!(got == want, "{side} {direction}: bytes differ");
    }
    if write_chunk == "-1" {
        // The 8 MiB body and its headers really went through one Write call: 513 records.
        let biggest = capture.data("write").iter().map(|(_, d, _)| d.len()).max().unwrap();
        assert!(biggest > 8 << 20, "largest write {biggest}");
    }
    assert_eq!(capture.stats()["lost"], 0);
}

#[test]
fn big_bodies_in_one_write_are_byte_exact() {
    if privileged() {
        big_bodies("-1", true);
        big_bodies("-1", false);
    }
}

#[test]
fn big_bodies_in_32k_writes_are_byte_exact() {
    if privileged() {
        big_bodies("32768", true);
        big_bodies("32768", false);
    }
}

/// `hey -n 20000 -c 32`: every response the hooked server wrote is captured, nothing lost.
#[test]
fn nothing_lost_under_load() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("load");
    let server_bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "server");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let tlstap = Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap()]);
    let nonce = "0123456789abcdef";
    let out = Command::new("hey")
        .args([
            "-n",
            "20000",
            "-c",
            "32",
            "-m",
            "POST",
            "-H",
            &format!("X-Nonce: {nonce}"),
            "-d",
            &format!("{nonce}-load"),
        ])
        .arg(format!("https://{}/echo?size=64", server.addr))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && report.contains("[200]\t20000 responses"), "hey: {report}");
    let capture = tlstap.stop();
    server.stop();

    // A Read may hold the end of one request and the start of the next: count per connection.
    let count = |direction, needle: &[u8]| -> usize {
        let streams = capture.streams_by_conn(direction);
        streams.values().map(|s| s.windows(needle.len()).filter(|w| *w == needle).count()).sum()
    };
    let responses = count("write", b"HTTP/1.1 200 OK\r\n");
    let requests = count("read", b"POST /echo?size=64 HTTP/1.1\r\n");
    eprintln!("captured {responses} responses, {requests} requests; {}", capture.stderr.trim());
    assert_eq!(responses, 20000, "every response captured");
    assert_eq!(requests, 20000, "every request captured");
    assert_eq!(capture.stats()["lost"], 0, "{}", capture.stats());
}

/// `--pid` keeps one process of a binary that two processes run; `--pid` alone finds the binary.
#[test]
fn pid_filter_in_bpf() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("pid-filter");
    let server_bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "server");
    let client_bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "client");
    let one = Server::start(&server_bin, &dir.path("one.jsonl"), &[]);
    let two = Server::start(&server_bin, &dir.path("two.jsonl"), &[]);
    let pid = one.proc.pid().to_string();
    for args in [vec!["-e", server_bin.to_str().unwrap(), "-p", &pid], vec!["-p", &pid]] {
        let tlstap = Tlstap::start(&dir, &args);
        for server in [&one, &two] {
            run_client(&client_bin, &server.addr, &dir.path("client.jsonl"), &["--requests", "2", "--sizes", "10"]);
        }
        let capture = tlstap.stop();
        let pids: std::collections::BTreeSet<u64> = capture.data("write").iter().map(|(p, _, _)| *p).collect();
        assert_eq!(pids, [u64::from(one.proc.pid())].into(), "{args:?}");
        assert_eq!(capture.data("write").len(), 2, "{args:?}: two responses of server one");
        let attach = capture.records.iter().find(|r| r["type"] == "attach").unwrap();
        assert_eq!(attach["binary"], server_bin.to_str().unwrap(), "the binary's path, not /proc/PID/exe");
    }
    one.stop();
    two.stop();
}

/// `--uid` keeps the processes of one user: a client run as `nobody` among clients run as root.
#[test]
fn uid_filter_in_bpf() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("uid-filter");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let server_bin = copy_binary(&fixture, &dir, "server");
    let client_bin = copy_binary(&fixture, &dir, "client");
    std::fs::set_permissions(&client_bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let tlstap = Tlstap::start(&dir, &["-e", client_bin.to_str().unwrap(), "-u", "65534"]);
    run_client(&client_bin, &server.addr, &dir.path("root.jsonl"), &["--requests", "3", "--sizes", "10"]);
    let status = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&client_bin)
        .args(["client", "--addr", &server.addr, "--manifest"])
        .arg(dir.path("nobody.jsonl"))
        .args(["--requests", "2", "--sizes", "10"])
        .status()
        .unwrap();
    assert!(status.success());
    let capture = tlstap.stop();
    server.stop();
    assert_eq!(capture.data("write").len(), 2, "only the two requests of uid 65534");
}

/// A ring buffer too small for an 8 MiB write loses chunks: the loss is counted by cause, the
/// call is marked truncated and still reports its real length.
#[test]
fn loss_is_counted_and_marked() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("loss");
    let capture = capture_two_8mib_writes(&dir, &["--ringbuf-mb", "1"]);
    assert!(capture.stats()["lost"].as_u64().unwrap() > 0, "{}", capture.stats());
    assert!(capture.stderr.contains("a larger --ringbuf-mb"), "and the remedy: {}", capture.stderr);
    assert_big_writes_cut(&capture);
}

/// What a capture cannot know is said, and nothing else is lost: TLS over the program's own
/// net.Conn wrapper shows `{"fd":null,"kind":"unknown"}` with every byte; a write from memory
/// the probe cannot read (a fresh file mapping) is marked truncated with its real length and
/// counted as `read_fault`.
#[test]
fn unknown_connections_and_unreadable_memory_are_said() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("oddconn");
    let bin = copy_binary(&fixture("1.27", "exe", "oddconn"), &dir, "oddconn");
    let odd = Stepped::start(&mut Command::new(&bin), "oddconn", "READY");
    let tlstap = Tlstap::start(&dir, &["-e", bin.to_str().unwrap()]);
    odd.go("DONE");
    let capture = tlstap.stop();

    let text = |direction: &str| -> Vec<String> {
        capture.data(direction).iter().map(|(_, d, _)| String::from_utf8_lossy(d).into_owned()).collect()
    };
    let (writes, reads) = (text("write"), text("read"));
    for i in 0..3 {
        for want in [format!("PING-wrapped-{i}"), format!("PONG-wrapped-{i}")] {
            assert!(writes.contains(&want), "write {want} missing: {writes:?}");
            assert!(reads.contains(&want), "read {want} missing: {reads:?}");
        }
    }
    for r in capture.records.iter().filter(|r| r["type"] == "data") {
        assert_eq!(r["conn"]["kind"], "unknown", "{r}");
        assert!(r["conn"]["fd"].is_null(), "{r}");
        assert!(r["conn"]["local"].is_null() && r["conn"]["remote"].is_null(), "{r}");
    }
    // The mapped write: its length, no bytes, truncated; the server's reads of it are whole.
    let mapped: Vec<_> = capture.data("write").into_iter().filter(|(_, _, r)| r["len"] == 65_536).collect();
    assert_eq!(mapped.len(), 1, "one 64 KiB write");
    assert_eq!(mapped[0].2["truncated"], true);
    assert!(mapped[0].1.len() < 65_536);
    let got: Vec<u8> = capture.data("read").iter().flat_map(|(_, d, _)| d.clone()).collect();
    let pattern: Vec<u8> = (0..65_536).map(|i| b'a' + (i % 26) as u8).collect();
    assert!(got.windows(pattern.len()).any(|w| w == pattern.as_slice()), "the server read the mapped bytes whole");
    let stats = capture.stats();
    assert_eq!(stats["lost_by_cause"]["read_fault"], 1, "one call lost bytes: {stats}");
    assert_eq!(stats["lost"], 1, "{stats}");
    assert!(capture.stderr.contains("read_fault=1"), "summary: {}", capture.stderr);
}

/// Where Reads are captured through their entry (`--read-path entry`: binaries whose RETs alone
/// were not proven to suffice), a Read already waiting when tlstap attaches returns without
/// the state its entry would have saved: its bytes are lost and counted as `no_entry_state`,
/// never guessed; the connection's later reads are captured.
#[test]
fn a_read_begun_before_attach_is_counted_not_guessed() {
    a_read_begun_before_attach(&["--read-path", "entry"]);
}

/// Where Read's copy into b captures it (every amd64 release, the default), a Read already
/// waiting when tlstap attaches needs nothing from its entry: it is captured whole, nothing
/// lost.
#[test]
fn a_read_begun_before_attach_is_captured_whole_at_the_copy() {
    a_read_begun_before_attach(&[]);
}

/// The same where the RETs alone capture a Read (`--read-path return`).
#[test]
fn a_read_begun_before_attach_is_captured_whole_at_return() {
    a_read_begun_before_attach(&["--read-path", "return"]);
}

fn a_read_begun_before_attach(extra: &[&str]) {
    if !privileged() {
        return;
    }
    let dir = TempDir::new(&format!("begun-before-attach{}", extra.join("-")));
    let server_bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "server");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    // A client that connects (the server's goroutine then waits in Read), waits for a line on
    // stdin, then makes two requests on that connection.
    let script = r#"
import http.client, ssl, sys
host, port = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPSConnection(host, int(port), context=ssl._create_unverified_context())
c.connect()
print("CONNECTED", flush=True)
sys.stdin.readline()
for name in ("first", "second"):
    c.request("POST", "/echo?size=5&n=" + name, body=name.encode() + b"-request-body")
    c.getresponse().read()
print("DONE", flush=True)
"#;
    let client =
        Stepped::start(Command::new("python3").args(["-c", script, &server.addr]), "python client", "CONNECTED");
    std::thread::sleep(std::time::Duration::from_millis(200)); // the server reaches its Read
    let mut args = vec!["-e", server_bin.to_str().unwrap()];
    args.extend(extra);
    let tlstap = Tlstap::start(&dir, &args);
    client.go("DONE");
    let capture = tlstap.stop();
    let server_pid = server.proc.pid();
    server.stop();
    let reads: Vec<u8> = capture.data("read").iter().flat_map(|(_, d, _)| d.clone()).collect();
    let reads = String::from_utf8_lossy(&reads);
    assert!(reads.contains("n=second") && reads.contains("second-request-body"), "later reads: {reads}");
    let stats = capture.stats();
    if extra.contains(&"entry") {
        // The request head arrives in the Read that began before attach; (http.client sends
        // the body apart, so a later Read may carry it).
        assert!(!reads.contains("n=first"), "the Read begun before attach is not made up: {reads}");
        assert!(stats["lost_by_cause"]["no_entry_state"].as_u64().unwrap() >= 1, "{stats}");
        assert!(capture.stderr.contains("no_entry_state="), "summary: {}", capture.stderr);
    } else {
        // Byte-exact: the server's manifest holds what each of its Reads returned.
        assert_capture_matches(&capture, &dir.path("server.jsonl"), server_pid);
        assert!(reads.contains("n=first") && reads.contains("first-request-body"), "{reads}");
        assert_eq!(stats["lost"], 0, "{stats}");
    }
}

/// A process killed inside a Read leaves its BPF slot claimed; tlstap frees such slots (every
/// 5 s) so that they do not push live Reads to the hash map for good. With one slot, the
/// server's idle keep-alive connection holds it in a Read when the server is killed.
#[test]
fn the_read_slot_of_a_killed_process_is_freed() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("capture-dead-slot");
    let server_bin = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "server");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let tlstap =
        Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap(), "--read-slots", "1", "--read-path", "entry", "-v"]);
    // One request, then the connection stays open: the server's goroutine waits in its next Read.
    let script = r#"
import http.client, ssl, sys
host, port = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPSConnection(host, int(port), context=ssl._create_unverified_context())
c.request("POST", "/echo?size=5", body=b"hello")
c.getresponse().read()
print("IDLE", flush=True)
sys.stdin.readline()
print("DONE", flush=True)
"#;
    let client = Stepped::start(Command::new("python3").args(["-c", script, &server.addr]), "python client", "IDLE");
    std::thread::sleep(std::time::Duration::from_millis(300)); // the server reaches its Read
    server.proc.signal(libc::SIGKILL);
    std::thread::sleep(std::time::Duration::from_secs(7)); // a sweep runs every 5 s
    let capture = tlstap.stop();
    client.go("DONE");
    server.stop();
    // http.client sends the head and the body apart: one or two Reads.
    let reads: Vec<u8> = capture.data("read").iter().flat_map(|(_, d, _)| d.clone()).collect();
    assert!(reads.starts_with(b"POST /echo?size=5 ") && reads.ends_with(b"\r\n\r\nhello"), "{reads:?}");
    assert!(
        capture.stderr.contains("freed 1 BPF Read slots held by processes that exited inside a Read"),
        "stderr: {}",
        capture.stderr
    );
}

/// At a terminal, growing loss is reported while the capture runs (at most every 5 s), not only
/// in the summary at the end.
#[test]
fn loss_is_reported_at_a_terminal_while_capturing() {
    if !privileged() {
        return;
    }
    use std::io::Read as _;
    let dir = TempDir::new("loss-tty");
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let out = dir.path("tty-capture.jsonl");
    // `script` runs tlstap on a pseudo-terminal: its stderr is a terminal, as a person's is.
    let cmd = format!("{TLSTAP} gotls -e {} --ringbuf-mb 1 --format jsonl -o {}", client_bin.display(), out.display());
    let mut term = Proc::spawn(
        Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped()),
        "script",
    );
    let mut screen = term.child.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = screen.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !read_jsonl(&out).iter().any(|r| r["type"] == "attach") {
        assert!(std::time::Instant::now() < deadline, "tlstap did not attach: {}", seen.lock().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let args = ["--requests", "1", "--sizes", "8388608", "--write-chunk", "-1"];
    run_client(&client_bin, &server.addr, &dir.path("client.jsonl"), &args);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !seen.lock().unwrap().contains("calls lost so far (ringbuf_full=") {
        assert!(std::time::Instant::now() < deadline, "no loss report on the terminal: {}", seen.lock().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // tlstap itself, not `script` (whose command line holds tlstap's): anchored at its start.
    let pattern = format!("^{TLSTAP} gotls -e {}", client_bin.display());
    let pkill = Command::new("pkill").args(["-INT", "-f", &pattern]).status().unwrap();
    assert!(pkill.success());
    assert!(term.wait_timeout(std::time::Duration::from_secs(30)).success(), "{}", seen.lock().unwrap());
    reader.join().unwrap();
    server.stop();
    let said = seen.lock().unwrap().clone();
    assert!(said.contains("ringbuf_full="), "the summary names the cause too: {said}");
}

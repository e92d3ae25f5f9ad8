//! Shared helpers of tlstap's integration tests: fixtures built by scripts/fixture.sh, child
//! processes that die with the test, running tlstap and reading what it wrote.
//!
//! Privileged tests call [`privileged`] first: without root they skip with a printed reason,
//! unless TLSTAP_REQUIRE_PRIVILEGED=1 (set by CI), which turns the skip into a failure.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

pub const TLSTAP: &str = env!("CARGO_BIN_EXE_tlstap");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The path of a Go fixture, built (or taken from the cache) by scripts/fixture.sh.
pub fn fixture(go_version: &str, variant: &str, program: &str) -> PathBuf {
    fixture_for_arch(go_version, variant, program, "amd64")
}

/// [`fixture`] for another GOARCH (cross-built; for analysis and error tests).
pub fn fixture_for_arch(go_version: &str, variant: &str, program: &str, goarch: &str) -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/fixture.sh"))
        .args([go_version, variant, program, goarch])
        .output()
        .expect("running scripts/fixture.sh");
    assert!(
        out.status.success(),
        "scripts/fixture.sh {go_version} {variant} {program} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// True when this test may load BPF. Otherwise prints why it skips, or fails under CI.
/// How long to wait for something that takes `secs` seconds at most on a usual machine:
/// scaled by TLSTAP_TEST_TIME_SCALE (scripts/kernel-tests.sh sets it under qemu's TCG, where
/// everything, the kernel's verifier included, runs many times slower).
pub fn patience(secs: u64) -> Duration {
    let scale = std::env::var("TLSTAP_TEST_TIME_SCALE").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
    Duration::from_secs(secs * scale.max(1))
}

pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    let reason = "not root: BPF tests need root";
    if std::env::var_os("TLSTAP_REQUIRE_PRIVILEGED").is_some_and(|v| v == "1") {
        panic!("{reason}, and TLSTAP_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

/// A fresh directory for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tlstap-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private copy of a binary: uprobes follow the file (inode), so copies are hooked apart.
pub fn copy_binary(src: &Path, dir: &TempDir, name: &str) -> PathBuf {
    let dst = dir.path(name);
    std::fs::copy(src, &dst).unwrap();
    dst
}

/// A child process killed when the guard drops (so a failing test leaves nothing running).
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, what: &str) -> Proc {
        // A binary copied a moment ago can be "busy": another test's child, forked while the
        // copy's file was open for writing, holds it until that child execs. Wait that out.
        let mut tries = 0;
        let child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other.unwrap_or_else(|e| panic!("spawning {what}: {e}")),
            }
        };
        Proc { child, what: what.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own live child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {timeout:?}", self.what);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGINT first: a tlstap killed outright could leave --catch-exec holds behind.
            self.signal(libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running fixture server and the address it listens on.
pub struct Server {
    pub proc: Proc,
    pub addr: String,
}

impl Server {
    pub fn start(binary: &Path, manifest: &Path, extra: &[&str]) -> Server {
        Server::start_with(Command::new(binary).args(["server", "--manifest"]).arg(manifest).args(extra))
    }

    /// Starts a fixture server through any command that ends up exec'ing it.
    pub fn start_with(cmd: &mut Command) -> Server {
        let mut proc = Proc::spawn(cmd.stdout(Stdio::piped()), "fixture server");
        let stdout = proc.child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("LISTEN ").unwrap_or_else(|| panic!("server said {line:?}")).to_string();
        Server { proc, addr }
    }

    pub fn stop(mut self) {
        self.proc.signal(libc::SIGTERM);
        self.proc.wait_timeout(patience(10));
    }
}

/// Runs the fixture client to completion and returns its pid; panics if it fails.
pub fn run_client(binary: &Path, addr: &str, manifest: &Path, extra: &[&str]) -> u32 {
    let mut proc = Proc::spawn(
        Command::new(binary).args(["client", "--addr", addr, "--manifest"]).arg(manifest).args(extra),
        "fixture client",
    );
    let status = proc.wait_timeout(patience(60));
    assert!(status.success(), "fixture client exited with {status}");
    proc.pid()
}

/// A running `tlstap gotls … --format jsonl -o FILE`.
pub struct Tlstap {
    pub proc: Proc,
    pub out: PathBuf,
    pub stderr: PathBuf,
}

impl Tlstap {
    /// Starts tlstap with `args` (plus jsonl output to a file) and waits until its probes are live.
    pub fn start(dir: &TempDir, args: &[&str]) -> Tlstap {
        let mut t = Tlstap::spawn(dir, args);
        t.wait_for_attach();
        t
    }

    /// Starts host-wide tlstap (no target; `-v` added) and waits until it is ready (its ready
    /// record: every process running at start is hooked, new ones are watched for).
    pub fn start_host(dir: &TempDir, args: &[&str]) -> Tlstap {
        let mut t = Tlstap::spawn(dir, &[&["-v"], args].concat());
        let deadline = Instant::now() + patience(60);
        while !read_jsonl(&t.out).iter().any(|v| v["type"] == "ready") {
            if let Some(status) = t.proc.child.try_wait().unwrap() {
                panic!("tlstap exited with {status}: {}", std::fs::read_to_string(&t.stderr).unwrap());
            }
            assert!(Instant::now() < deadline, "host-wide tlstap not ready within 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    fn spawn(dir: &TempDir, args: &[&str]) -> Tlstap {
        let out = dir.path("tlstap.jsonl");
        let stderr = dir.path("tlstap.stderr");
        // A previous run's output must not pass for this run's records.
        let _ = std::fs::remove_file(&out);
        let proc = Proc::spawn(
            Command::new(TLSTAP)
                .arg("gotls")
                .args(args)
                // The per-call view these tests check (HTTP decoding has its own tests, in
                // http.rs); a test that wants the HTTP view says `--data` (calls and exchanges).
                .args(if args.iter().any(|a| *a == "--raw" || *a == "--data") { &[][..] } else { &["--raw"][..] })
                .args(["--format", "jsonl", "-o"])
                .arg(&out)
                .stderr(std::fs::File::create(&stderr).unwrap()),
            "tlstap",
        );
        Tlstap { proc, out, stderr }
    }

    fn wait_for_attach(&mut self) {
        let deadline = Instant::now() + patience(30);
        loop {
            if read_jsonl(&self.out).iter().any(|v| v["type"] == "attach") {
                return;
            }
            if let Some(status) = self.proc.child.try_wait().unwrap() {
                panic!(
                    "tlstap exited with {status} before attaching: {}",
                    std::fs::read_to_string(&self.stderr).unwrap()
                );
            }
            assert!(Instant::now() < deadline, "tlstap did not attach within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT, waits for a clean exit and returns every record written.
    pub fn stop(mut self) -> Capture {
        self.proc.signal(libc::SIGINT);
        let status = self.proc.wait_timeout(patience(30));
        let stderr = std::fs::read_to_string(&self.stderr).unwrap();
        assert!(status.success(), "tlstap exited with {status}: {stderr}");
        Capture { records: read_jsonl(&self.out), stderr }
    }
}

/// What tlstap wrote.
pub struct Capture {
    pub records: Vec<Value>,
    pub stderr: String,
}

impl Capture {
    /// The payload of each connection in one direction, concatenated in output order.
    pub fn streams_by_conn(&self, direction: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut streams = std::collections::BTreeMap::<String, Vec<u8>>::new();
        for (_, data, record) in self.data(direction) {
            let id = record["conn"]["id"].as_str().expect("every data event names its connection");
            streams.entry(id.to_string()).or_default().extend_from_slice(&data);
        }
        streams
    }

    /// Data events of one direction, in output order: (pid, payload, record).
    pub fn data(&self, direction: &str) -> Vec<(u64, Vec<u8>, &Value)> {
        self.records
            .iter()
            .filter(|r| r["type"] == "data" && r["direction"] == direction)
            .map(|r| (r["pid"].as_u64().unwrap(), b64(r["data_b64"].as_str().unwrap()), r))
            .collect()
    }

    /// The secret records as NSS key log lines ("LABEL CLIENT_RANDOM SECRET").
    pub fn secret_lines(&self) -> std::collections::BTreeSet<String> {
        self.records
            .iter()
            .filter(|r| r["type"] == "secret")
            .map(|r| {
                let field = |name: &str| r[name].as_str().expect("secret records have every field").to_string();
                format!("{} {} {}", field("label"), field("client_random"), field("secret"))
            })
            .collect()
    }

    pub fn stats(&self) -> &Value {
        self.records.iter().find(|r| r["type"] == "stats").expect("a stats record")
    }
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Only complete lines: the writer may be mid-line.
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

pub fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// The fixture's own record of its tls.Conn calls: (conn, direction, bytes), in order.
pub fn manifest_calls(path: &Path) -> Vec<(u64, String, Vec<u8>)> {
    read_jsonl(path)
        .into_iter()
        .filter(|r| r["type"] == "call")
        .map(|r| {
            (r["conn"].as_u64().unwrap(), r["dir"].as_str().unwrap().to_string(), b64(r["data_b64"].as_str().unwrap()))
        })
        .collect()
}

/// A tshark capturing loopback traffic of one TCP port into a file, as an independent witness.
pub struct Tshark {
    proc: Proc,
    pub file: PathBuf,
}

impl Tshark {
    /// Starts capturing and waits until tshark says it is.
    pub fn start(file: &Path, port: u16) -> Tshark {
        let mut proc = Proc::spawn(
            Command::new("tshark")
                .args(["-q", "-i", "lo", "-f", &format!("tcp port {port}"), "-w"])
                .arg(file)
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
            "tshark",
        );
        let stderr = proc.child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + patience(30);
        loop {
            let line = lines.next().unwrap_or_else(|| panic!("tshark exited before capturing")).unwrap();
            if line.contains("Capturing on") {
                break;
            }
            assert!(Instant::now() < deadline, "tshark did not start capturing");
        }
        // Keep draining stderr so tshark never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Tshark { proc, file: file.to_path_buf() }
    }

    /// Stops the capture and waits until the file is complete.
    pub fn stop(mut self) -> PathBuf {
        std::thread::sleep(Duration::from_millis(300)); // let the last packets reach tshark
        self.proc.signal(libc::SIGINT);
        self.proc.wait_timeout(patience(30));
        self.file.clone()
    }
}

/// `tshark -r FILE [-o tls.keylog_file:KEYS] -Y http -T fields -e …`: one line per HTTP message.
pub fn tshark_http_fields(file: &Path, keylog: Option<&Path>, fields: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file);
    if let Some(keys) = keylog {
        cmd.arg("-o").arg(format!("tls.keylog_file:{}", keys.display()));
    } else {
        cmd.args(["-o", "tls.keylog_file:"]);
    }
    cmd.args(["-Y", "http", "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "tshark -r failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A random 16-hex-digit nonce (the fixture's X-Nonce format).
pub fn nonce() -> String {
    let mut bytes = [0u8; 8];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `curl` as an independent TLS client writing its own key log; asserts the fixture answered.
pub fn curl_echo(addr: &str, tls: &[&str], nonce: &str, keylog: &Path) {
    let out = Command::new("curl")
        .args(["-sS", "-k", "--noproxy", "*", "--fail", "-o", "/dev/null"])
        .args(tls)
        .args(["-X", "POST", "--data-binary", &format!("{nonce}-request")])
        .args(["-H", &format!("X-Nonce: {nonce}")])
        .arg(format!("https://{addr}/echo?size=64&n={nonce}"))
        .env("SSLKEYLOGFILE", keylog)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {tls:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Describes the first difference between two byte strings without dumping them whole.
pub fn first_difference(got: &[u8], want: &[u8]) -> String {
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    format!("lengths {} vs {}, first difference at byte {at}", got.len(), want.len())
}

/// The fixture's connections: conn number -> (local, remote) as the program saw them.
pub fn manifest_conns(path: &Path) -> std::collections::HashMap<u64, (String, String)> {
    read_jsonl(path)
        .into_iter()
        .filter(|r| r["type"] == "conn")
        .map(|r| {
            let addr = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (r["conn"].as_u64().unwrap(), (addr("local"), addr("remote")))
        })
        .collect()
}

/// tlstap's data events of `pid` equal the fixture manifest's calls, in both directions, and
/// name the connection the program used (addresses as its LocalAddr/RemoteAddr said).
pub fn assert_capture_matches(capture: &Capture, manifest: &Path, pid: u32) {
    let calls = manifest_calls(manifest);
    let conns = manifest_conns(manifest);
    for direction in ["write", "read"] {
        let want: Vec<_> = calls.iter().filter(|c| c.1 == direction).collect();
        let got = capture.data(direction);
        let got: Vec<_> = got.iter().filter(|(p, _, _)| *p == u64::from(pid)).collect();
        assert!(!want.is_empty(), "the fixture made no {direction} calls");
        assert_eq!(got.len(), want.len(), "{direction}: {} events captured, {} calls made", got.len(), want.len());
        let mut ids = std::collections::HashMap::new();
        for (i, ((_, data, record), (conn, _, want))) in got.iter().zip(&want).enumerate() {
            assert!(data.as_slice() == want.as_slice(), "{direction} call {i}: {}", first_difference(data, want));
            assert_eq!(record["len"].as_u64(), Some(want.len() as u64), "{direction} call {i} len");
            assert_eq!(record["truncated"], false, "{direction} call {i}");
            assert!(record["tid"].as_u64().is_some_and(|t| t > 0));
            assert!(record["ts_ns"].as_u64().unwrap() > 1_700_000_000_000_000_000, "wall-clock stamp");
            let c = &record["conn"];
            let (local, remote) = &conns[conn];
            if local.parse::<std::net::SocketAddr>().is_ok() {
                assert_eq!(c["kind"], "tcp", "{direction} call {i}: {c}");
                assert_eq!(
                    (c["local"].as_str().unwrap(), c["remote"].as_str().unwrap()),
                    (local.as_str(), remote.as_str()),
                    "{direction} call {i}"
                );
            } else {
                assert_eq!(c["kind"], "unix", "{direction} call {i}: {c}");
            }
            assert!(c["fd"].as_i64().is_some_and(|fd| fd >= 0), "{direction} call {i}: {c}");
            // One id per connection, a different one for each.
            let id = c["id"].as_str().unwrap().to_string();
            assert_eq!(ids.entry(*conn).or_insert_with(|| id.clone()), &id, "{direction} call {i}: conn id changed");
        }
        let distinct: std::collections::HashSet<_> = ids.values().collect();
        assert_eq!(distinct.len(), ids.len(), "{direction}: connections share an id");
    }
    // The process's name on every event: the name of the file it runs (15 bytes, as the
    // kernel keeps it); fixtures run from copies named after their role.
    let comms: std::collections::HashSet<&str> = capture
        .records
        .iter()
        .filter(|r| r["type"] == "data" && r["pid"] == pid)
        .map(|r| r["comm"].as_str().expect("comm"))
        .collect();
    assert_eq!(comms.len(), 1, "one comm per process: {comms:?}");
    assert!(comms.iter().all(|c| !c.is_empty() && c.len() <= 15), "{comms:?}");
    let stats = capture.stats();
    assert_eq!(stats["lost"], 0, "stats: {stats}");
    assert!(capture.stderr.contains(" 0 lost"), "summary: {}", capture.stderr);
}

/// Like [`assert_capture_matches`] for a process with several connections in use at once,
/// whose calls interleave differently in the manifest and in the capture: per connection
/// (found by its addresses) and direction, the bytes and the number of calls must match.
pub fn assert_streams_match(capture: &Capture, manifest: &Path, pid: u32) {
    let calls = manifest_calls(manifest);
    let conns = manifest_conns(manifest);
    assert!(conns.len() > 1, "the fixture used one connection");
    for direction in ["write", "read"] {
        let got = capture.data(direction);
        for (conn, (local, remote)) in &conns {
            let want: Vec<&[u8]> =
                calls.iter().filter(|c| c.0 == *conn && c.1 == direction).map(|c| c.2.as_slice()).collect();
            let mine: Vec<&[u8]> = got
                .iter()
                .filter(|(p, _, r)| {
                    *p == u64::from(pid)
                        && r["conn"]["local"] == local.as_str()
                        && r["conn"]["remote"] == remote.as_str()
                })
                .map(|(_, data, _)| data.as_slice())
                .collect();
            assert_eq!(mine.len(), want.len(), "pid {pid} conn {conn} {direction}: calls");
            let (mine, want) = (mine.concat(), want.concat());
            assert!(mine == want, "pid {pid} conn {conn} {direction}: {}", first_difference(&mine, &want));
        }
    }
}

/// The ids of the BPF programs process `pid` holds (its program and link descriptors).
pub fn program_ids_of(pid: u32) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("fdinfo")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:").and_then(|v| v.trim().parse().ok()))
                .collect::<Vec<u64>>()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The programs `ids` are unloaded (within 10 s). The kernel frees a program once its last
/// link is gone, after an RCU grace period; a program stays loaded while any link to it does,
/// so no program means no link either (Debian's bpftool cannot name uprobe_multi links' files).
pub fn assert_programs_unloaded(ids: &[u64]) {
    let loaded = || -> Vec<u64> {
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
    let deadline = Instant::now() + patience(10);
    while !loaded().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(loaded(), Vec::<u64>::new(), "tlstap's programs (and so its links) are gone after it exits");
}

/// Records a measurement a test makes (not a verdict): printed by scripts/test.sh after the
/// suite, from target/tmp/measurements/NAME.txt.
pub fn write_measurement(name: &str, text: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("measurements");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.txt")), text).unwrap();
    eprint!("{text}");
}

/// Two 8 MiB writes, each in one call, by a hooked fixture client, tlstap run with `args` too
/// (a buffer too small for them): returns the capture.
pub fn capture_two_8mib_writes(dir: &TempDir, args: &[&str]) -> Capture {
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, dir, "server"), copy_binary(&fixture, dir, "client"));
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let tlstap = Tlstap::start(dir, &[&["-e", client_bin.to_str().unwrap()], args].concat());
    let client_args = ["--requests", "2", "--sizes", "8388608", "--write-chunk", "-1"];
    run_client(&client_bin, &server.addr, &dir.path("client.jsonl"), &client_args);
    let capture = tlstap.stop();
    server.stop();
    capture
}

/// The loss of [`capture_two_8mib_writes`] is counted as ringbuf_full and named in the
/// summary; both writes are reported with their real length, and a write is marked truncated
/// exactly when bytes of it are missing. (Which writes lose bytes depends on how far the reader
/// drains while BPF emits, which a loaded machine changes: one may come whole, never both.)
pub fn assert_big_writes_cut(capture: &Capture) {
    let stats = capture.stats();
    assert!(stats["lost_by_cause"]["ringbuf_full"].as_u64().unwrap() > 0, "{stats}");
    assert!(capture.stderr.contains("ringbuf_full="), "summary names the cause: {}", capture.stderr);
    let big: Vec<_> =
        capture.data("write").into_iter().filter(|(_, _, r)| r["len"].as_u64().unwrap() > 8 << 20).collect();
    assert_eq!(big.len(), 2, "both big writes reported, with their real length");
    let mut cut = 0;
    for (_, data, record) in big {
        let short = (data.len() as u64) < record["len"].as_u64().unwrap();
        assert_eq!(record["truncated"], short, "truncated exactly when bytes are missing");
        cut += usize::from(short);
    }
    assert!(cut > 0, "the loss counted is marked on a write");
}

/// tshark's HTTP/2 dissector, on the decrypted capture, shows the same header fields on each
/// stream as tlstap decoded (client's view: streams are the client's).
pub fn assert_tshark_agrees(file: &Path, keys: &Path, records: &[&Value]) {
    // Fields joined by an ASCII unit separator: header values hold commas.
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .arg("-o")
        .arg(format!("tls.keylog_file:{}", keys.display()))
        .args(["-Y", "http2.type == 1", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=\u{1f}"])
        .args(["-e", "http2.type", "-e", "http2.streamid", "-e", "http2.header.name", "-e", "http2.header.value"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    // (name, value) of every field tshark decoded, in order, per stream. A packet's frames
    // are listed in parallel (type, stream); its header fields are those of its HEADERS frames.
    let mut tshark: std::collections::BTreeMap<u64, Vec<(String, String)>> = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let [types, streams, names, values] = cols[..] else { panic!("tshark line {line:?}") };
        let headers_streams: std::collections::BTreeSet<u64> = types
            .split('\u{1f}')
            .zip(streams.split('\u{1f}'))
            .filter(|(t, _)| *t == "1")
            .map(|(_, s)| s.parse().unwrap())
            .collect();
        assert_eq!(headers_streams.len(), 1, "one stream's HEADERS per packet: {line:?}");
        let stream = *headers_streams.first().unwrap();
        let pairs = names.split('\u{1f}').zip(values.split('\u{1f}')).map(|(n, v)| (n.to_string(), v.to_string()));
        tshark.entry(stream).or_default().extend(pairs);
    }
    let mut compared = 0;
    for record in records.iter().filter(|r| r["program"] == "client") {
        let stream = record["stream_id"].as_u64().unwrap();
        let mut ours = Vec::new();
        for part in [&record["request"]["headers"], &record["response"]["headers"], &record["response"]["trailers"]] {
            for f in part.as_array().unwrap() {
                ours.push((f[0].as_str().unwrap().to_string(), f[1].as_str().unwrap().to_string()));
            }
        }
        let keys: Vec<_> = tshark.keys().collect();
        assert_eq!(
            tshark.get(&stream),
            Some(&ours),
            "stream {stream}: tshark and tlstap differ (tshark streams {keys:?})"
        );
        compared += 1;
    }
    assert!(compared > 0, "no stream compared with tshark");
}

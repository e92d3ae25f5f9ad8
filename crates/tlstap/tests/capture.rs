//! Privileged end-to-end tests: real BPF on real Go programs. The fixture records every
//! tls.Conn call it makes; tlstap's capture must match it byte for byte, call for call.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken expectations

mod common;

use common::*;

/// Request bodies from a few bytes to one full TLS record; responses use the sizes reversed.
const SIZES: &str = "3,100,1000,5000,16000,16384";

/// Hooks the server (or the client) of a fresh fixture pair built with `go_version`/`variant`
/// and checks the capture against the hooked side's manifest.
fn hooked_side_is_byte_exact(go_version: &str, variant: &str, hook_server: bool) {
    let side = if hook_server { "server" } else { "client" };
    let dir = TempDir::new(&format!("capture-{go_version}-{variant}-{side}"));
    let fixture = fixture(go_version, variant, "tlsfixture");
    let server_bin = copy_binary(&fixture, &dir, "server");
    let client_bin = copy_binary(&fixture, &dir, "client");
    let (server_manifest, client_manifest) = (dir.path("server.jsonl"), dir.path("client.jsonl"));

    let server = Server::start(&server_bin, &server_manifest, &[]);
    let hooked = if hook_server { &server_bin } else { &client_bin };
    let tlstap = Tlstap::start(&dir, &["-e", hooked.to_str().unwrap()]);
    let client_pid = run_client(&client_bin, &server.addr, &client_manifest, &["--requests", "12", "--sizes", SIZES]);
    let server_pid = server.proc.pid();
    let capture = tlstap.stop();
    server.stop();

    let attach = capture.records.iter().find(|r| r["type"] == "attach").unwrap();
    assert_eq!(attach["binary"], hooked.to_str().unwrap());
    let stack_abi = go_version == "1.15";
    assert_eq!(attach["abi"], if stack_abi { "stack" } else { "register" }, "{attach}");
    assert!(attach["go_version"].as_str().unwrap().starts_with(&format!("go{go_version}")), "{attach}");
    if hook_server {
        assert_capture_matches(&capture, &server_manifest, server_pid);
    } else {
        assert_capture_matches(&capture, &client_manifest, client_pid);
    }
}

/// Every variant of one Go version, each side hooked in turn.
fn version_matrix(go_version: &str, variants: &[&str]) {
    if !privileged() {
        return;
    }
    for variant in variants {
        for hook_server in [true, false] {
            eprintln!("go{go_version} {variant} hooking the {}", if hook_server { "server" } else { "client" });
            hooked_side_is_byte_exact(go_version, variant, hook_server);
        }
    }
}

/// Plain, PIE, `-s -w`, and PIE stripped again by `strip --strip-all`.
const VARIANTS: &[&str] = &["exe", "pie", "exe-sw", "pie-strip"];
/// Externally linked with the cgo resolver, so `.text` does not start at `runtime.text`; and
/// stripped (function table base from the binary's data), and `objcopy --strip-all`.
const CGO_VARIANTS: &[&str] = &["cgo", "cgo-pie", "cgo-pie-strip", "exe-objcopy"];

// Newest first: new releases are what break layouts.
#[test]
fn go1_27() {
    version_matrix("1.27", &[VARIANTS, CGO_VARIANTS].concat());
}

#[test]
fn go1_26() {
    version_matrix("1.26", &[VARIANTS, &["cgo-strip"]].concat());
}

#[test]
fn go1_25() {
    version_matrix("1.25", VARIANTS);
}

#[test]
fn go1_24() {
    version_matrix("1.24", VARIANTS);
}

#[test]
fn go1_23() {
    version_matrix("1.23", VARIANTS);
}

#[test]
fn go1_22() {
    version_matrix("1.22", VARIANTS);
}

#[test]
fn go1_21() {
    version_matrix("1.21", VARIANTS);
}

#[test]
fn go1_19() {
    version_matrix("1.19", &[VARIANTS, CGO_VARIANTS].concat());
}

/// The stack ABI (Go < 1.17 on amd64): arguments on the stack, g in thread-local storage.
#[test]
fn go1_15_stack_abi() {
    version_matrix("1.15", VARIANTS);
}

/// The connection of a TLS server on a unix socket: data captured, `conn` says unix with its fd.
#[test]
fn unix_socket_connection() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("unix");
    let fixture = fixture("1.27", "pie-strip", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let socket = dir.path("tls.sock");
    let manifest = dir.path("server.jsonl");
    let server = Server::start(&server_bin, &manifest, &["--unix", socket.to_str().unwrap()]);
    let tlstap = Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap()]);
    let out = std::process::Command::new(&client_bin)
        .args(["client", "--unix", socket.to_str().unwrap(), "--manifest"])
        .arg(dir.path("client.jsonl"))
        .args(["--requests", "3", "--sizes", "10,5000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid = server.proc.pid();
    let capture = tlstap.stop();
    server.stop();
    assert_capture_matches(&capture, &manifest, pid);
}

/// IPv6 addresses in `conn`, as the program saw them.
#[test]
fn ipv6_connection() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("ipv6");
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let manifest = dir.path("server.jsonl");
    let server = Server::start(&server_bin, &manifest, &["--addr", "[::1]:0"]);
    let tlstap = Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap()]);
    run_client(
        &client_bin,
        &server.addr,
        &dir.path("client.jsonl"),
        &["--requests", "3", "--sizes", "10", "--conns", "2"],
    );
    let pid = server.proc.pid();
    let capture = tlstap.stop();
    server.stop();
    assert!(manifest_conns(&manifest).values().all(|(l, _)| l.starts_with("[::1]:")));
    // Two connections in use at once: their calls interleave differently in the fixture's log
    // and in the capture, so each connection is compared on its own (found by its addresses).
    assert_streams_match(&capture, &manifest, pid);
    assert_eq!(capture.stats()["lost"], 0);
}

/// A dual-stack listener (Go's usual ":port") accepting an IPv4 client: the kernel socket is
/// IPv6 and holds the peer as ::ffff:127.0.0.1; the program sees 127.0.0.1, and so must the user.
#[test]
fn ipv4_client_of_a_dual_stack_listener() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("dualstack");
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let manifest = dir.path("server.jsonl");
    let server = Server::start(&server_bin, &manifest, &["--addr", ":0"]);
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let tlstap = Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap()]);
    run_client(
        &client_bin,
        &format!("127.0.0.1:{port}"),
        &dir.path("client.jsonl"),
        &["--requests", "2", "--sizes", "10"],
    );
    let pid = server.proc.pid();
    let capture = tlstap.stop();
    server.stop();
    assert!(manifest_conns(&manifest).values().all(|(l, _)| l.starts_with("127.0.0.1:")), "IPv4 as Go shows it");
    assert_capture_matches(&capture, &manifest, pid);
}

/// Kernels before 6.6 have no uprobe_multi: one perf-event link per offset, same capture.
#[test]
fn per_offset_links_capture_the_same() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("per-offset");
    let fixture = fixture("1.27", "pie-strip", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let manifest = dir.path("server.jsonl");
    let server = Server::start(&server_bin, &manifest, &[]);
    let tlstap = Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap(), "--attach-per-offset"]);
    run_client(&client_bin, &server.addr, &dir.path("client.jsonl"), &["--requests", "4", "--sizes", SIZES]);
    let pid = server.proc.pid();
    let capture = tlstap.stop();
    server.stop();
    assert_capture_matches(&capture, &manifest, pid);
}

/// Two processes of one binary at once, several connections each: every call comes out under
/// its own process, byte-exact per connection. (Goroutine addresses of two such processes can
/// coincide, which is why BPF keys a Read's entry state by process too; this run does not force
/// a coincidence, so it guards the separation in general, not that key in particular.)
/// BPF keeps a Read's entry state in a slot per goroutine and, when another goroutine holds
/// that slot, in a hash map. With one slot (`--read-slots 1`) eight connections' Reads contend
/// for it all the time, so most take the hash map: every byte must still arrive, none
/// counted as a Read without entry state. (Reads go through their entry only where the RETs
/// alone were not proven to suffice: `--read-path entry` takes that path here.)
#[test]
fn reads_that_find_their_slot_taken_use_the_hash_map() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("capture-read-slots");
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let (server_manifest, client_manifest) = (dir.path("server.jsonl"), dir.path("client.jsonl"));
    let server = Server::start(&server_bin, &server_manifest, &[]);
    let tlstap =
        Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap(), "--read-slots", "1", "--read-path", "entry"]);
    run_client(&client_bin, &server.addr, &client_manifest, &["--requests", "200", "--conns", "8", "--sizes", SIZES]);
    let server_pid = server.proc.pid();
    let capture = tlstap.stop();
    server.stop();
    assert_streams_match(&capture, &server_manifest, server_pid);
    assert_eq!(capture.stats()["lost_by_cause"]["no_entry_state"], 0);
}

/// A connection per request: each new tls.Conn may take the memory of one the program
/// closed, at the same address, which BPF's per-connection cache of the socket must not take
/// for the old connection (the cache is checked against the socket at every call). Every
/// event must name its own connection's addresses.
#[test]
fn a_connection_per_request_names_each_connection() {
    if !privileged() {
        return;
    }
    for hook_server in [true, false] {
        let dir = TempDir::new("capture-conn-per-request");
        let fixture = fixture("1.27", "exe", "tlsfixture");
        let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
        let (server_manifest, client_manifest) = (dir.path("server.jsonl"), dir.path("client.jsonl"));
        let server = Server::start(&server_bin, &server_manifest, &[]);
        let hooked = if hook_server { &server_bin } else { &client_bin };
        let tlstap = Tlstap::start(&dir, &["-e", hooked.to_str().unwrap()]);
        let args = ["--requests", "150", "--sizes", "100,20000", "--write-chunk", "-1"];
        let client_pid = run_client(&client_bin, &server.addr, &client_manifest, &args);
        let server_pid = server.proc.pid();
        let capture = tlstap.stop();
        server.stop();
        let (pid, manifest) = if hook_server { (server_pid, &server_manifest) } else { (client_pid, &client_manifest) };
        assert_eq!(manifest_conns(manifest).len(), 150);
        assert_capture_matches(&capture, manifest, pid);
    }
}

#[test]
fn two_processes_of_one_binary_are_kept_apart() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("capture-two-processes");
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let server_bin = copy_binary(&fixture, &dir, "server");
    let client_bin = copy_binary(&fixture, &dir, "client");
    let manifests = [dir.path("server-a.jsonl"), dir.path("server-b.jsonl")];
    let servers = [Server::start(&server_bin, &manifests[0], &[]), Server::start(&server_bin, &manifests[1], &[])];
    let tlstap = Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap()]);
    std::thread::scope(|scope| {
        for (i, server) in servers.iter().enumerate() {
            let (client_bin, addr, manifest) = (&client_bin, &server.addr, dir.path(&format!("client-{i}.jsonl")));
            // Different traffic, so that the two heaps (and the buffers in them) diverge.
            let sizes = ["10,2000", "70000,5,300"][i];
            scope.spawn(move || {
                run_client(client_bin, addr, &manifest, &["--requests", "300", "--conns", "8", "--sizes", sizes])
            });
        }
    });
    let pids = servers.each_ref().map(|s| s.proc.pid());
    let capture = tlstap.stop();
    for server in servers {
        server.stop();
    }
    for (pid, manifest) in pids.iter().zip(&manifests) {
        assert_streams_match(&capture, manifest, *pid);
    }
}

/// SIGTERM ends a capture as Ctrl-C does: exit 0 and, after the ready line, one summary line on stderr whose counts
/// are those of the events written; every probe is gone afterwards.
#[test]
fn sigterm_prints_one_summary_line_and_detaches() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("sigterm");
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let manifest = dir.path("server.jsonl");
    let server = Server::start(&server_bin, &manifest, &[]);
    let mut tlstap = Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap()]);
    run_client(&client_bin, &server.addr, &dir.path("client.jsonl"), &["--requests", "4", "--sizes", "10,2000"]);
    let server_pid = server.proc.pid();
    let ids = program_ids_of(tlstap.proc.pid());
    tlstap.proc.signal(libc::SIGTERM);
    let status = tlstap.proc.wait_timeout(std::time::Duration::from_secs(30));
    let stderr = std::fs::read_to_string(&tlstap.stderr).unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status}, {stderr}");
    let records = read_jsonl(&tlstap.out);
    let data: Vec<_> = records.iter().filter(|r| r["type"] == "data").collect();
    let bytes: u64 = data.iter().map(|r| r["len"].as_u64().unwrap()).sum();
    let ready = "tlstap: ready: binaries hooked: 1, processes running them: 1; Ctrl-C stops\n";
    assert_eq!(
        stderr,
        format!("{ready}tlstap: {} events, {bytes} bytes, 0 lost\n", data.len()),
        "ready, then one summary line"
    );
    assert_eq!(data.len(), manifest_calls(&manifest).len(), "every call of the server");
    assert!(data.iter().all(|r| r["pid"] == server_pid), "only the hooked server");
    assert!(!ids.is_empty(), "tlstap's programs were loaded");
    assert_programs_unloaded(&ids);
    server.stop();
}

/// A binary whose path is not UTF-8 and holds terminal escapes and a line break (its command
/// name then too): the capture goes on, JSON Lines writes the path losslessly escaped, and the
/// text view shows no control character, path and command name escaped the same way.
#[test]
fn hostile_names_are_written_escaped_and_never_end_a_capture() {
    use std::os::unix::ffi::OsStrExt as _;
    use std::process::{Command, Stdio};
    if !privileged() {
        return;
    }
    let dir = TempDir::new("capture-names");
    let binary = dir.0.join(std::ffi::OsStr::from_bytes(b"s\xff\x1b[2J\nv"));
    std::fs::copy(fixture("1.27", "exe", "tlsfixture"), &binary).unwrap();
    let shown = format!("{}/s\\xff\\x1b[2J\\x0av", dir.0.display());
    let server = Server::start(&binary, &dir.path("server.jsonl"), &[]);
    // Both views at once, each waited for until it has attached.
    let (jsonl_out, text_out) = (dir.path("out.jsonl"), dir.path("out.txt"));
    let mut views = Vec::new();
    for (format, out) in [("jsonl", &jsonl_out), ("text", &text_out)] {
        let mut cmd = Command::new(TLSTAP);
        cmd.args(["gotls", "--raw", "--format", format, "-e"]).arg(&binary).arg("-o").arg(out);
        views.push(Proc::spawn(cmd.stderr(Stdio::null()), "tlstap"));
        let deadline = std::time::Instant::now() + patience(30);
        while !std::fs::read_to_string(out).unwrap_or_default().contains("attach") {
            assert!(std::time::Instant::now() < deadline, "tlstap --format {format} did not attach");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    run_client(&binary, &server.addr, &dir.path("client.jsonl"), &["--requests", "2", "--sizes", "100"]);
    server.stop();
    for mut view in views {
        view.signal(libc::SIGINT);
        assert!(view.wait_timeout(patience(30)).success(), "the capture ended cleanly");
    }
    let records = read_jsonl(&jsonl_out);
    let attach = records.iter().find(|r| r["type"] == "attach").unwrap();
    assert_eq!(attach["binary"], shown.as_str(), "lossless: \\ and \\xNN undo to the bytes");
    let data: Vec<_> = records.iter().filter(|r| r["type"] == "data").collect();
    assert!(data.len() >= 4, "requests and responses of both processes captured");
    assert!(records.iter().any(|r| r["type"] == "stats"), "the capture ran to its end");
    let text = std::fs::read_to_string(&text_out).unwrap();
    assert!(!text.contains('\x1b'), "no terminal escape in the text view");
    assert!(text.contains(&format!("# attached {shown} (")), "{text}");
    // The command name: the first 15 bytes of the file name, escaped alike.
    assert!(text.contains(" comm=s\\xff\\x1b[2J\\x0av "), "{text}");
}

/// The file at the path given is replaced between its analysis and the attach (a test-only
/// delay opens the window): the probes must land on the analysed file, never at its offsets in
/// the new one. The analysed program (renamed aside) is captured; the newcomer (another Go
/// release, other offsets) runs untouched and uncaptured.
#[test]
fn probes_land_on_the_analysed_file_when_its_path_is_swapped() {
    use std::process::Command;
    if !privileged() {
        return;
    }
    let dir = TempDir::new("capture-swap");
    let path = copy_binary(&fixture("1.27", "exe", "tlsfixture"), &dir, "srv");
    let (out, err) = (dir.path("out.jsonl"), dir.path("err.txt"));
    let mut tlstap = Proc::spawn(
        Command::new(TLSTAP)
            .args(["gotls", "--raw", "--format", "jsonl", "-e"])
            .arg(&path)
            .arg("-o")
            .arg(&out)
            .env("TLSTAP_TEST_ATTACH_DELAY_MS", "1500")
            .stderr(std::fs::File::create(&err).unwrap()),
        "tlstap",
    );
    let deadline = std::time::Instant::now() + patience(30);
    while !std::fs::read_to_string(&err).unwrap().contains("analysed; attaching in") {
        assert!(std::time::Instant::now() < deadline, "no analysis: {}", std::fs::read_to_string(&err).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let analysed = dir.path("srv.analysed");
    std::fs::rename(&path, &analysed).unwrap();
    std::fs::copy(fixture("1.19", "exe", "tlsfixture"), &path).unwrap();
    while !read_jsonl(&out).iter().any(|r| r["type"] == "attach") {
        assert!(std::time::Instant::now() < deadline, "no attach: {}", std::fs::read_to_string(&err).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let newcomer = Server::start(&path, &dir.path("new-server.jsonl"), &[]);
    run_client(&path, &newcomer.addr, &dir.path("new-client.jsonl"), &["--requests", "3", "--sizes", "100"]);
    let original = Server::start(&analysed, &dir.path("server.jsonl"), &[]);
    run_client(&analysed, &original.addr, &dir.path("client.jsonl"), &["--requests", "3", "--sizes", "100"]);
    let (newcomer_pid, original_pid) = (newcomer.proc.pid(), original.proc.pid());
    newcomer.stop();
    original.stop();
    tlstap.signal(libc::SIGINT);
    assert!(tlstap.wait_timeout(patience(30)).success());
    let pids: std::collections::BTreeSet<u64> =
        read_jsonl(&out).iter().filter(|r| r["type"] == "data").filter_map(|r| r["pid"].as_u64()).collect();
    assert!(pids.contains(&u64::from(original_pid)), "the analysed program is captured: {pids:?}");
    assert!(!pids.contains(&u64::from(newcomer_pid)), "the file swapped in is not: {pids:?}");
}

/// Writes probed at their stack check's branch (issue 16: a probe the kernel emulates) see
/// that branch run twice for a call whose stack grows there: once taken (to grow it), once
/// not. testdata/go/stackgrow makes Writes at every depth a fresh goroutine can have, so that
/// some grow the stack at Write's own check: each Write must come out once, in order, whole,
/// on the stack ABI and the register ABI, and through the body-start probe as before.
#[test]
fn a_write_whose_stack_grows_at_its_check_is_captured_once() {
    if !privileged() {
        return;
    }
    const WRITES: usize = 2400; // two sweeps of stackgrow's 1200 depths
    for (version, extra) in [("1.27", &[][..]), ("1.19", &[]), ("1.15", &[]), ("1.27", &["--read-path", "entry"])] {
        let dir = TempDir::new(&format!("stackgrow-{version}{}", extra.len()));
        let bin = copy_binary(&fixture(version, "exe", "stackgrow"), &dir, "stackgrow");
        let mut args = vec!["-e", bin.to_str().unwrap()];
        args.extend(extra);
        let tlstap = Tlstap::start(&dir, &args);
        let out = std::process::Command::new(&bin).arg(WRITES.to_string()).output().unwrap();
        assert!(out.status.success(), "stackgrow: {}", String::from_utf8_lossy(&out.stderr));
        let capture = tlstap.stop();
        let writes: Vec<Vec<u8>> = capture.data("write").into_iter().map(|(_, data, _)| data).collect();
        let want: Vec<Vec<u8>> =
            (0..WRITES).map(|i| [format!("write-{i:05}|").into_bytes(), vec![0; i % 7]].concat()).collect();
        assert_eq!(writes.len(), want.len(), "go{version} {extra:?}: one event per Write");
        for (i, (got, want)) in writes.iter().zip(&want).enumerate() {
            assert!(got == want, "go{version} {extra:?} write {i}: {}", first_difference(got, want));
        }
        assert_eq!(capture.stats()["lost"], 0, "go{version}");
    }
}

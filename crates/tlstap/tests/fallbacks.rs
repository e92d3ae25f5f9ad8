//! Privileged: every kernel-feature fallback path (tlstap_bpf::features) forced on this kernel
//! with the hidden `--disable-feature` flag, as on a kernel that lacks the feature, and held to
//! the same oracles: the fixture's own record of its calls (byte for byte, call for call) and
//! curl's key log. scripts/kernel-matrix.sh runs these on real older kernels too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken expectations

mod common;

use std::collections::BTreeSet;

use common::*;

/// Bodies up to 100 kB, each request and response in one Write (a connection per request):
/// such a Write spans seven 16 KiB chunks (the chunk loop's path).
const SIZES: &str = "3,100000,16384,40000";
const ONE_WRITE: &[&str] = &["--write-chunk", "-1"];

/// Every feature with a fallback, and all of them at once (a 5.10 kernel lacks the first
/// three and uprobe_multi; a 4.18 RHEL kernel the ring buffer too).
const ALONE: &[&str] = &["ringbuf", "bpf-loop", "cookies", "fetch-atomics", "uprobe-multi"];

fn disabled(features: &[&str]) -> Vec<String> {
    features.iter().flat_map(|f| ["--disable-feature".to_string(), f.to_string()]).collect()
}

/// Hooks one side of a fixture pair with `features` disabled and checks the capture against
/// that side's manifest; returns the capture.
fn byte_exact_without(go_version: &str, variant: &str, features: &[&str], hook_server: bool) -> Capture {
    let side = if hook_server { "server" } else { "client" };
    let dir = TempDir::new(&format!("fallback-{go_version}-{variant}-{side}-{}", features.join("+")));
    let fixture = fixture(go_version, variant, "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let (server_manifest, client_manifest) = (dir.path("server.jsonl"), dir.path("client.jsonl"));
    let server = Server::start(&server_bin, &server_manifest, &[]);
    let hooked = if hook_server { &server_bin } else { &client_bin };
    let mut args = vec!["-e".to_string(), hooked.to_str().unwrap().to_string(), "-v".to_string()];
    args.extend(disabled(features));
    let tlstap = Tlstap::start(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let client_args = [&["--requests", "6", "--sizes", SIZES], ONE_WRITE].concat();
    let client_pid = run_client(&client_bin, &server.addr, &client_manifest, &client_args);
    let server_pid = server.proc.pid();
    let capture = tlstap.stop();
    server.stop();
    if hook_server {
        assert_capture_matches(&capture, &server_manifest, server_pid);
    } else {
        assert_capture_matches(&capture, &client_manifest, client_pid);
    }
    let big = capture.records.iter().filter(|r| r["type"] == "data" && r["len"].as_u64() > Some(16_384)).count();
    assert!(big > 0, "go{go_version} {variant} {side} {features:?}: no call larger than one chunk was captured");
    capture
}

/// Each fallback alone, on the newest Go (register ABI, stripped PIE), each side hooked.
#[test]
fn each_fallback_path_is_byte_exact() {
    if !privileged() {
        return;
    }
    for feature in ALONE {
        for hook_server in [true, false] {
            eprintln!("without {feature}, hooking the {}", if hook_server { "server" } else { "client" });
            let capture = byte_exact_without("1.27", "pie-strip", &[feature], hook_server);
            // Disabled here; on an older kernel (kernel-matrix.sh) absent already.
            let (off, absent) = (format!("{feature}: disabled)"), format!("{feature}: no, "));
            assert!(capture.stderr.contains(&off) || capture.stderr.contains(&absent), "{}", capture.stderr);
        }
    }
}

/// All fallbacks at once, as on the oldest kernels, on both Go ABIs: the stack ABI's goroutine
/// and arguments come from memory, and without cookies its ABI comes from the inode map.
#[test]
fn all_fallbacks_together_on_both_abis() {
    if !privileged() {
        return;
    }
    for (go_version, variant) in [("1.15", "exe"), ("1.19", "pie"), ("1.27", "pie-strip")] {
        for hook_server in [true, false] {
            let capture = byte_exact_without(go_version, variant, ALONE, hook_server);
            for path in ["perf buffers, per CPU", "bounded loop", "a program per role", "per-CPU and plain"] {
                assert!(capture.stderr.contains(path), "-v names the path {path:?}: {}", capture.stderr);
            }
        }
    }
}

/// Secrets through the oldest path (perf buffers, a program per role): every line curl's own
/// key log has, tlstap has too.
#[test]
fn secrets_on_the_oldest_path_match_curl() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("fallback-keylog");
    let server_bin = copy_binary(&fixture("1.27", "pie-strip", "tlsfixture"), &dir, "server");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let (ours, curls) = (dir.path("keys.log"), dir.path("curl.keys"));
    let mut args = vec!["-e", server_bin.to_str().unwrap(), "-k", ours.to_str().unwrap()];
    let flags = disabled(ALONE);
    args.extend(flags.iter().map(String::as_str));
    let tlstap = Tlstap::start(&dir, &args);
    curl_echo(&server.addr, &["--tlsv1.3"], &nonce(), &curls);
    curl_echo(&server.addr, &["--tlsv1.2", "--tls-max", "1.2"], &nonce(), &curls);
    let capture = tlstap.stop();
    server.stop();
    let lines = |p: &std::path::Path| -> BTreeSet<String> {
        std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect()
    };
    let expected: BTreeSet<_> = lines(&curls).into_iter().filter(|l| !l.starts_with("EXPORTER_SECRET ")).collect();
    assert_eq!(expected.len(), 5, "curl wrote 4 TLS 1.3 lines and 1 TLS 1.2 line: {expected:?}");
    let ours = lines(&ours);
    let missing: Vec<_> = expected.difference(&ours).collect();
    assert!(missing.is_empty(), "lines curl wrote but tlstap did not: {missing:?}");
    assert_eq!(capture.secret_lines(), ours);
}

/// A kernel without its own BTF: one line naming --btf; with --btf FILE, the capture works
/// (here the file is the kernel's own BTF, read as a file: libbpf's custom BTF path).
#[test]
fn without_kernel_btf_the_btf_file_is_used() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("fallback-btf");
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let out = std::process::Command::new(TLSTAP)
        .args(["gotls", "-e", server_bin.to_str().unwrap(), "--disable-feature", "btf"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("has no BTF") && stderr.contains("--btf FILE"), "{stderr}");

    let manifest = dir.path("server.jsonl");
    let server = Server::start(&server_bin, &manifest, &[]);
    let btf = tlstap_bpf::features::KERNEL_BTF_PATH;
    let tlstap = Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap(), "--disable-feature", "btf", "--btf", btf]);
    run_client(&client_bin, &server.addr, &dir.path("client.jsonl"), &["--requests", "3", "--sizes", SIZES]);
    let pid = server.proc.pid();
    let capture = tlstap.stop();
    server.stop();
    assert_capture_matches(&capture, &manifest, pid);
}

/// `--dry-run` as root says which path each job takes on this kernel, and why.
#[test]
fn dry_run_names_the_kernel_paths() {
    if !privileged() {
        return;
    }
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let out = std::process::Command::new(TLSTAP)
        .args(["gotls", "-e", fixture.to_str().unwrap(), "--dry-run", "--disable-feature", "bpf-loop"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // Disabled here; absent already on an older kernel (kernel-matrix.sh).
    let bounded = "kernel:   large calls: bounded loops, 1 GiB per call (bpf-loop: ";
    let why = ["disabled)", "no, 5.17 upstream)"];
    assert!(why.iter().any(|w| stdout.contains(&format!("{bounded}{w}"))), "{stdout}");
    for job in ["records:", "probe roles:", "counters:", "attach:", "pcap attach:", "btf:"] {
        assert!(stdout.contains(&format!("kernel:   {job}")), "{job} {stdout}");
    }
}

/// Perf buffers without room lose records like a full ring buffer does: counted by cause once
/// per call, the call marked truncated with its real length.
#[test]
fn perf_buffer_loss_is_counted_and_marked() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("fallback-perf-loss");
    let capture = capture_two_8mib_writes(&dir, &["--ringbuf-mb", "1", "--disable-feature", "ringbuf"]);
    // The two 8 MiB writes, and the reads of the answers that arrive while the buffers are full.
    let stats = capture.stats();
    assert!(stats["lost"] == stats["lost_by_cause"]["ringbuf_full"], "{stats}");
    assert_big_writes_cut(&capture);
}

/// A kernel without what tlstap cannot do without gets one line naming it, and exit code 1.
#[test]
fn a_missing_required_feature_is_one_clear_line() {
    if !privileged() {
        return;
    }
    let fixture = fixture("1.27", "exe", "tlsfixture");
    for (disabled, named) in [
        (&["probe-read-user"][..], "lacks probe-read-user (upstream 5.5)"),
        (&["bpf-loop", "bounded-loops"][..], "lacks bounded-loops (upstream 5.3)"),
    ] {
        let mut cmd = std::process::Command::new(TLSTAP);
        cmd.args(["gotls", "-e", fixture.to_str().unwrap()]);
        for f in disabled {
            cmd.args(["--disable-feature", f]);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(named), "{stderr}");
    }
}

/// --h2-hooks needs cookies and the ring buffer: where either is missing (kernels before 5.15,
/// forced here) it is one clear line and exit 1, and outside the HTTP view it is refused too.
#[test]
fn h2_hooks_without_their_kernel_features_are_one_clear_line() {
    if !privileged() {
        return;
    }
    let fixture = fixture("1.27", "exe", "httpfixture");
    let cases: [(&[&str], &str); 3] = [
        (&["--disable-feature", "cookies"], "Linux 5.15 or later"),
        (&["--disable-feature", "ringbuf"], "Linux 5.15 or later"),
        (&["-m", "keylog", "-k", "/dev/null"], "belongs to the HTTP view"),
    ];
    for (args, named) in cases {
        let out = std::process::Command::new(TLSTAP)
            .args(["gotls", "--h2-hooks", "-e", fixture.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

/// Without bpf_loop, a call of more than one block of chunks (1024 chunks, 16 MiB) crosses
/// from one block to the next: a 20 MB write in one call is byte-exact, nothing lost.
#[test]
fn a_call_of_many_blocks_is_byte_exact_without_bpf_loop() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("fallback-blocks");
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let manifest = dir.path("client.jsonl");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let args = ["-e", client_bin.to_str().unwrap(), "--ringbuf-mb", "64", "--disable-feature", "bpf-loop"];
    let tlstap = Tlstap::start(&dir, &args);
    let pid = run_client(
        &client_bin,
        &server.addr,
        &manifest,
        &[&["--requests", "1", "--sizes", "20000000"], ONE_WRITE].concat(),
    );
    let capture = tlstap.stop();
    server.stop();
    assert_capture_matches(&capture, &manifest, pid);
    assert!(
        capture.records.iter().any(|r| r["type"] == "data" && r["len"].as_u64() > Some(16 << 20)),
        "a call over 16 MiB"
    );
}

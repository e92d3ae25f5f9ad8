//! Keylog mode against independent oracles: curl's own SSLKEYLOGFILE (every line it wrote must
//! be in tlstap's file) and tshark (tlstap's key log alone decrypts a capture tshark took).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken expectations

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;

use common::*;

fn lines(path: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

/// Hooks a fixture server with `-m keylog`, fetches from it with curl over TLS 1.3 and 1.2,
/// and checks tlstap's key log against curl's, and (with `tshark`) against a real capture.
fn keylog_matches_curl(go_version: &str, variant: &str, with_tshark: bool) {
    let dir = TempDir::new(&format!("keylog-{go_version}-{variant}"));
    let server_bin = copy_binary(&fixture(go_version, variant, "tlsfixture"), &dir, "server");
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let port: u16 = server.addr.rsplit(':').next().unwrap().parse().unwrap();
    let wire = with_tshark.then(|| Tshark::start(&dir.path("wire.pcapng"), port));
    let (ours, curls) = (dir.path("keys.log"), dir.path("curl.keys"));
    let tlstap =
        Tlstap::start(&dir, &["-e", server_bin.to_str().unwrap(), "-m", "keylog", "-k", ours.to_str().unwrap()]);
    let nonces = [nonce(), nonce()];
    curl_echo(&server.addr, &["--tlsv1.3"], &nonces[0], &curls);
    curl_echo(&server.addr, &["--tlsv1.2", "--tls-max", "1.2"], &nonces[1], &curls);
    let tlstap_out = tlstap.out.clone();
    let capture = tlstap.stop();
    let wire = wire.map(Tshark::stop);
    server.stop();

    let (ours_lines, curl_lines) = (lines(&ours), lines(&curls));
    // Go never logs EXPORTER_SECRET (crypto/tls derives it but does not call writeKeyLog).
    let expected: BTreeSet<_> = curl_lines.iter().filter(|l| !l.starts_with("EXPORTER_SECRET ")).cloned().collect();
    assert_eq!(expected.len(), 5, "curl wrote 4 TLS 1.3 lines and 1 TLS 1.2 line: {curl_lines:?}");
    let missing: Vec<_> = expected.difference(&ours_lines).collect();
    assert!(missing.is_empty(), "go{go_version} {variant}: lines curl wrote but tlstap did not: {missing:?}");
    assert_eq!(ours_lines.len(), std::fs::read_to_string(&ours).unwrap().lines().count(), "no duplicate lines");
    assert_eq!(std::fs::metadata(&ours).unwrap().permissions().mode() & 0o777, 0o600);
    // The -o output holds the same secrets (and plaintext, in other modes): 0600 too.
    assert_eq!(std::fs::metadata(&tlstap_out).unwrap().permissions().mode() & 0o777, 0o600);

    // The same secrets in the JSONL stream, with exact lengths.
    assert_eq!(capture.secret_lines(), ours_lines);
    assert!(!capture.records.iter().any(|r| r["type"] == "data"), "keylog mode captures no plaintext");

    if let Some(wire) = wire {
        let fields = ["http.request.uri", "http.response.line"];
        let decrypted = tshark_http_fields(&wire, Some(&ours), &fields);
        for n in &nonces {
            assert!(decrypted.contains(&format!("n={n}")), "request with nonce {n} not decrypted:\n{decrypted}");
            assert!(
                decrypted.contains(&format!("X-Nonce: {n}")),
                "response with nonce {n} not decrypted:\n{decrypted}"
            );
        }
        let without = tshark_http_fields(&wire, None, &fields);
        assert!(nonces.iter().all(|n| !without.contains(n.as_str())), "tshark decrypted without keys:\n{without}");
    }
}

fn versions(list: &[(&str, &str)], with_tshark: bool) {
    if !privileged() {
        return;
    }
    for (version, variant) in list {
        eprintln!("go{version} {variant}");
        keylog_matches_curl(version, variant, with_tshark);
    }
}

#[test]
fn keylog_newest_and_oldest_decrypts_a_tshark_capture() {
    versions(&[("1.27", "pie-strip"), ("1.15", "exe")], true);
}

#[test]
fn keylog_every_version_stripped_pie() {
    let list = [("1.26", "pie-strip"), ("1.25", "pie-strip"), ("1.24", "pie-strip"), ("1.23", "pie-strip")];
    versions(&list, false);
}

/// The other binary kinds (plain, PIE, `-s -w`, cgo, stripped cgo PIE), newest and oldest
/// register-ABI releases: the probe point and the secrets' reading do not depend on them.
#[test]
fn keylog_every_binary_kind() {
    let list = [
        ("1.27", "exe"),
        ("1.27", "pie"),
        ("1.27", "exe-sw"),
        ("1.27", "cgo"),
        ("1.27", "cgo-pie-strip"),
        ("1.21", "exe-objcopy"),
        ("1.19", "exe-sw"),
    ];
    versions(&list, false);
}

#[test]
fn keylog_older_versions() {
    let list =
        [("1.22", "pie-strip"), ("1.21", "pie-strip"), ("1.19", "pie-strip"), ("1.19", "cgo"), ("1.15", "pie-strip")];
    versions(&list, false);
}

/// `-k` with the default mode captures plaintext and secrets together.
#[test]
fn keylog_file_alongside_plaintext() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("keylog-with-text");
    let fixture = fixture("1.27", "exe", "tlsfixture");
    let (server_bin, client_bin) = (copy_binary(&fixture, &dir, "server"), copy_binary(&fixture, &dir, "client"));
    let server = Server::start(&server_bin, &dir.path("server.jsonl"), &[]);
    let keys = dir.path("keys.log");
    let tlstap = Tlstap::start(&dir, &["-e", client_bin.to_str().unwrap(), "-k", keys.to_str().unwrap()]);
    run_client(&client_bin, &server.addr, &dir.path("client.jsonl"), &["--requests", "2", "--sizes", "10"]);
    let capture = tlstap.stop();
    server.stop();
    let secrets = capture.records.iter().filter(|r| r["type"] == "secret").count();
    assert_eq!(secrets, 4, "one TLS 1.3 handshake: 4 secrets");
    assert_eq!(lines(&keys).len(), 4);
    assert_eq!(capture.data("write").len(), 2, "two requests written");
}

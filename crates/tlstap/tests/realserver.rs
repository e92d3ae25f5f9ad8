//! A real server, as distributions ship it: Debian 12's Caddy (Go 1.19, stripped, net/http's
//! HTTP/2 beside x/net's), fetched from the archive by scripts/debian-binary.sh and never
//! installed. curl talks HTTP/2 to it over one connection; every exchange tlstap decodes must
//! match what curl received (headers in order, bodies byte-exact as transferred) and the files
//! served (bodies decompressed), with and without --h2-hooks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The path of a program from Debian's archive (downloaded and unpacked once, cached).
fn debian_binary(package: &str, path: &str) -> std::path::PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/debian-binary.sh"))
        .args([package, path])
        .output()
        .expect("run scripts/debian-binary.sh");
    assert!(out.status.success(), "debian-binary.sh {package}: {}", String::from_utf8_lossy(&out.stderr));
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// (name, value) of each field, names lowercase, pseudo-headers left out.
fn fields(headers: &Value) -> Vec<(String, String)> {
    headers
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f[0].as_str().unwrap().to_ascii_lowercase(), f[1].as_str().unwrap().to_string()))
        .filter(|(n, _)| !n.starts_with(':'))
        .collect()
}

/// Each response's header fields as a curl `-D` file has them (a block per response).
fn curl_heads(text: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks: Vec<Vec<(String, String)>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("HTTP/") {
            blocks.push(Vec::new());
        } else if let (Some((n, v)), Some(block)) = (line.split_once(": "), blocks.last_mut()) {
            block.push((n.to_ascii_lowercase(), v.trim_end().to_string()));
        }
    }
    blocks
}

#[test]
fn debian_caddy_over_http2_is_decoded_exactly() {
    if !privileged() {
        return;
    }
    for hooks in [false, true] {
        caddy_run(hooks);
    }
}

fn caddy_run(hooks: bool) {
    let dir = TempDir::new(&format!("caddy-{hooks}"));
    let caddy = copy_binary(&debian_binary("caddy", "usr/bin/caddy"), &dir, "caddy");
    let (cert, key, site) = (dir.path("cert.pem"), dir.path("key.pem"), dir.path("site"));
    let openssl = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(openssl.status.success(), "openssl: {}", String::from_utf8_lossy(&openssl.stderr));
    std::fs::create_dir(&site).unwrap();
    let small = b"<html>tlstap and caddy</html>\n".to_vec();
    let big: Vec<u8> =
        (0..20_000).flat_map(|i| format!("line {i} {}\n", "abc".repeat(i % 30 + 1)).into_bytes()).collect();
    std::fs::write(site.join("index.html"), &small).unwrap();
    std::fs::write(site.join("big.txt"), &big).unwrap();
    let port = free_port();
    let caddyfile = dir.path("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tadmin off\n\tservers {{\n\t\tprotocols h1 h2\n\t}}\n}}\nhttps://127.0.0.1:{port} {{\n\ttls {} {}\n\t\
             root * {}\n\tencode gzip zstd\n\tfile_server\n}}\n",
            cert.display(),
            key.display(),
            site.display()
        ),
    )
    .unwrap();

    let mut args = vec!["--data", "-e", caddy.to_str().unwrap()];
    if hooks {
        args.push("--h2-hooks");
    }
    let tlstap = Tlstap::start(&dir, &args);
    let home = dir.path("home");
    let mut server = Proc::spawn(
        Command::new(&caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile)
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
        "caddy",
    );
    let deadline = Instant::now() + patience(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "caddy did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // One connection: index.html plain, big.txt gzip (curl decompresses), big.txt zstd (as sent).
    let url = |p: &str| format!("https://127.0.0.1:{port}/{p}");
    // A -D file per transfer: each --next segment would truncate a shared one.
    let (heads, bodies) = (["h0", "h1", "h2"].map(|h| dir.path(h)), ["b0", "b1", "b2"].map(|b| dir.path(b)));
    let curl = Command::new("curl")
        .args(["-sS", "-k", "--noproxy", "*", "--fail", "--http2", "-D"])
        .arg(&heads[0])
        .args(["-H", "X-Test: one", "-o"])
        .arg(&bodies[0])
        .arg(url("index.html"))
        .args(["--next", "-k", "--noproxy", "*", "--fail", "--http2", "--compressed", "-D"])
        .arg(&heads[1])
        .arg("-o")
        .arg(&bodies[1])
        .arg(url("big.txt"))
        .args(["--next", "-k", "--noproxy", "*", "--fail", "--http2", "-H", "Accept-Encoding: zstd", "-D"])
        .arg(&heads[2])
        .arg("-o")
        .arg(&bodies[2])
        .arg(url("big.txt"))
        .output()
        .unwrap();
    assert!(curl.status.success(), "curl: {}", String::from_utf8_lossy(&curl.stderr));
    server.signal(libc::SIGTERM);
    server.wait_timeout(patience(30));
    let capture = tlstap.stop();

    let what = format!("caddy (hooks {hooks})");
    let mut records: Vec<&Value> = capture.records.iter().filter(|r| r["type"] == "http").collect();
    records.sort_by_key(|r| r["request_ns"].as_u64());
    assert_eq!(records.len(), 3, "{what}: one exchange per request");
    let curl_heads: Vec<_> = heads.iter().flat_map(|h| curl_heads(&std::fs::read_to_string(h).unwrap())).collect();
    let expected = [(&small, "index.html", None), (&big, "big.txt", Some("gzip")), (&big, "big.txt", Some("zstd"))];
    for (i, (record, (file, path, encoding))) in records.iter().zip(expected).enumerate() {
        let what = format!("{what} exchange {i} /{path}");
        assert_eq!((record["proto"].as_str(), record["program"].as_str()), (Some("h2"), Some("server")), "{what}");
        assert_eq!((record["method"].as_str(), record["path"].as_str()), (Some("GET"), Some(&*format!("/{path}"))));
        assert_eq!(record["status"], 200, "{what}");
        assert_eq!(record["undecodable_fields"], false, "{what}");
        let request = fields(&record["request"]["headers"]);
        assert!(request.iter().any(|(n, v)| n == "user-agent" && v.starts_with("curl/")), "{what}: {request:?}");
        let response = &record["response"];
        assert_eq!(fields(&response["headers"]), curl_heads[i], "{what}: response headers, in order");
        let decoded = b64(response["body_b64"].as_str().unwrap());
        assert!(&decoded == file, "{what}: decoded body {}", first_difference(&decoded, file));
        let received = std::fs::read(&bodies[i]).unwrap();
        match encoding {
            None => assert_eq!(response["body_decoded"], false, "{what}"),
            Some(e) => {
                assert_eq!(response["body_encodings"][0].as_str(), Some(e), "{what}");
                let raw = b64(response["raw_body_b64"].as_str().unwrap());
                assert_eq!(raw.len() as u64, response["body_len"].as_u64().unwrap(), "{what}");
                // curl decompressed gzip (--compressed); the zstd body it kept as transferred.
                let want = if e == "zstd" { raw } else { decoded };
                assert!(received == want, "{what}: {}", first_difference(&received, &want));
            }
        }
    }
}

//! HTTP decoding on real programs, checked against independent oracles: what Go's own HTTP
//! server and client saw (the `httpfixture` manifests: headers as net/http parsed them, bodies
//! as the application read them), what curl received, and tshark's HTTP/2 dissector on a
//! capture of the same run decrypted with tlstap's key log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken expectations

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// Header fields shown in the manifests differently from the wire (Go moves them elsewhere:
/// `Host` to `r.Host`, `Transfer-Encoding` to `TransferEncoding`, declared trailers to
/// `Trailer`), compared apart or not at all.
const NOT_IN_GO_HEADER_MAPS: [&str; 3] = ["host", "transfer-encoding", "trailer"];

/// Field name (lowercase) → values, in order, for every field that is not a pseudo-header.
fn header_map(fields: &Value) -> BTreeMap<String, Vec<String>> {
    let mut map = BTreeMap::<String, Vec<String>>::new();
    for field in fields.as_array().expect("headers are an array") {
        let name = field[0].as_str().expect("decoded name").to_ascii_lowercase();
        let value = field[1].as_str().expect("decoded value").to_string();
        if !name.starts_with(':') && !NOT_IN_GO_HEADER_MAPS.contains(&name.as_str()) {
            map.entry(name).or_default().push(value);
        }
    }
    map
}

/// Field name (lowercase) → values of the fields whose name was decoded.
fn header_map_partial(fields: &Value) -> BTreeMap<String, Vec<Option<String>>> {
    let mut map = BTreeMap::<String, Vec<Option<String>>>::new();
    for field in fields.as_array().into_iter().flatten() {
        if let Some(name) = field[0].as_str() {
            map.entry(name.to_ascii_lowercase()).or_default().push(field[1].as_str().map(str::to_string));
        }
    }
    map
}

/// A Go `http.Header` from a manifest, keyed by lowercase name.
fn go_header_map(headers: &Value, prefix: &str) -> BTreeMap<String, Vec<String>> {
    headers
        .as_object()
        .expect("a header map")
        .iter()
        .filter_map(|(name, values)| Some((name.strip_prefix(prefix)?.to_ascii_lowercase(), values)))
        .filter(|(name, _)| !NOT_IN_GO_HEADER_MAPS.contains(&name.as_str()) && !name.starts_with("trailer:"))
        .map(|(name, values)| {
            (name, values.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect())
        })
        .collect()
}

/// The manifest lines of one side, by nonce.
fn manifest_by_nonce(path: &std::path::Path, side: &str) -> BTreeMap<String, Value> {
    read_jsonl(path)
        .into_iter()
        .filter(|v| v["side"] == side)
        .map(|v| (v["nonce"].as_str().unwrap().to_string(), v))
        .collect()
}

fn http_records(capture: &Capture) -> Vec<&Value> {
    capture.records.iter().filter(|r| r["type"] == "http").collect()
}

/// The nonce of the request: its body begins with the nonce, or with its first 10 characters
/// for 10-byte bodies (the fixture puts it there), found among the manifest's nonces.
fn nonce_of(record: &Value, known: &BTreeMap<String, Value>) -> String {
    let body = b64(record["request"]["body_b64"].as_str().unwrap());
    let prefix = String::from_utf8_lossy(&body[..16.min(body.len())]).into_owned();
    let mut matches = known.keys().filter(|n| n.starts_with(&prefix) && prefix.len() >= 10);
    match (matches.next(), matches.next()) {
        (Some(nonce), None) => nonce.clone(),
        _ => panic!("request body {prefix:?} names no single nonce"),
    }
}

/// Checks one decoded exchange against what Go's server and client saw.
fn assert_exchange_matches(record: &Value, server: &Value, client: &Value, proto: &str, addr: &str) {
    let nonce = client["nonce"].as_str().unwrap();
    let what = format!("{} exchange {nonce} ({})", record["program"], record["proto"]);
    assert_eq!(record["proto"], if proto == "h1" { "http/1.1" } else { proto }, "{what}");
    assert_eq!(record["method"], "POST", "{what}");
    assert_eq!(record["path"], server["path"], "{what}");
    assert_eq!(record["status"], 200, "{what}");
    assert_eq!(record["undecodable_fields"], false, "{what}");
    if proto == "h2" {
        assert_eq!((record["scheme"].as_str(), record["authority"].as_str()), (Some("https"), Some(addr)), "{what}");
        assert!(record["stream_id"].as_u64().is_some_and(|id| id % 2 == 1), "{what}");
    }
    let (request, response) = (&record["request"], &record["response"]);
    assert_eq!(header_map(&request["headers"]), go_header_map(&server["headers"], ""), "{what}: request headers");
    assert_eq!(b64(request["body_b64"].as_str().unwrap()), b64(server["body_b64"].as_str().unwrap()), "{what}");
    assert_eq!(header_map(&response["headers"]), go_header_map(&client["headers"], ""), "{what}: response headers");
    let plain = b64(client["body_b64"].as_str().unwrap());
    let got = b64(response["body_b64"].as_str().unwrap());
    assert!(got == plain, "{what}: response body {}", first_difference(&got, &plain));
    assert_eq!(response["body_len"], client["raw_len"], "{what}: bytes transferred");
    let encoding = client["headers"]["Content-Encoding"][0].as_str();
    match encoding {
        Some(e) => {
            assert_eq!(
                (response["body_encodings"][0].as_str(), response["body_decoded"].as_bool()),
                (Some(e), Some(true)),
                "{what}"
            );
            let raw = b64(response["raw_body_b64"].as_str().expect("the transferred bytes are kept"));
            assert_eq!(raw.len() as u64, client["raw_len"].as_u64().unwrap(), "{what}");
        }
        None => assert_eq!(response["body_decoded"], false, "{what}"),
    }
    let trailers = header_map(&response["trailers"]);
    assert_eq!(trailers, go_header_map(&client["headers"], "Trailer:"), "{what}: trailers");
    assert_eq!((request["complete"].as_bool(), response["complete"].as_bool()), (Some(true), Some(true)), "{what}");
    let (start, first, end) =
        (record["request_ns"].as_u64(), record["response_ns"].as_u64(), record["end_ns"].as_u64());
    assert!(start <= first && first <= end, "{what}: timestamps {start:?} {first:?} {end:?}");
}

/// Go's client and server both traced (one binary): every request is decoded twice, once as
/// each side saw it, and both match the manifests. With `tshark`, the HTTP/2 headers of each
/// stream also match tshark's dissector on the decrypted capture.
fn go_client_and_server(proto: &str, go: &str, variant: &str, extra: &[&str], tshark: bool) {
    let dir = TempDir::new(&format!("http-{proto}-{go}-{variant}"));
    let fixture = fixture(go, variant, "httpfixture");
    let binary = copy_binary(&fixture, &dir, "httpfixture");
    let keys = dir.path("keys.log");
    let tlstap = Tlstap::start(&dir, &["--data", "-e", binary.to_str().unwrap(), "-k", keys.to_str().unwrap()]);
    let manifest = dir.path("manifest.jsonl");
    let server = Server::start(&binary, &manifest, &["--proto", proto]);
    let port: u16 = server.addr.rsplit(':').next().unwrap().parse().unwrap();
    let witness = tshark.then(|| Tshark::start(&dir.path("wire.pcapng"), port));
    // tshark says it is capturing a little before its filter is in place; the handshake must
    // not be missed (without it nothing decrypts).
    std::thread::sleep(std::time::Duration::from_millis(if tshark { 1000 } else { 0 }));
    let args = [&["--proto", proto, "--requests", "9", "--sizes", "10,1000,20000"][..], extra].concat();
    run_client(&binary, &server.addr, &manifest, &args);
    let capture_file = witness.map(Tshark::stop);
    let addr = server.addr.clone();
    server.stop();
    let capture = tlstap.stop();

    let (servers, clients) = (manifest_by_nonce(&manifest, "server"), manifest_by_nonce(&manifest, "client"));
    assert_eq!(clients.len(), 9);
    let records = http_records(&capture);
    for program in ["client", "server"] {
        let mine: Vec<_> = records.iter().filter(|r| r["program"] == program).collect();
        let nonces: BTreeSet<String> = mine.iter().map(|r| nonce_of(r, &clients)).collect();
        assert_eq!(nonces, clients.keys().cloned().collect(), "{program}: one exchange per request");
        assert_eq!(mine.len(), 9, "{program}: no exchange twice");
        for record in mine {
            let nonce = nonce_of(record, &clients);
            assert_exchange_matches(record, &servers[&nonce], &clients[&nonce], proto, &addr);
        }
    }
    if let Some(file) = capture_file {
        assert_tshark_agrees(&file, &keys, &records);
    }
}

#[test]
fn h2_go_client_and_server_match_manifests_and_tshark() {
    if !privileged() {
        return;
    }
    go_client_and_server("h2", "1.19", "exe", &["--trailers"], true);
}

#[test]
fn h2_stripped_pie_go_server_and_client() {
    if !privileged() {
        return;
    }
    go_client_and_server("h2", "1.27", "pie-strip", &[], false);
}

#[test]
fn http1_go_client_and_server_match_manifests() {
    if !privileged() {
        return;
    }
    go_client_and_server("h1", "1.19", "exe", &["--trailers"], false);
}

/// curl (not traced) against the traced Go server, over HTTP/2 and HTTP/1.1: the server's
/// exchanges match what curl sent and what curl received.
#[test]
fn curl_http2_and_http1_against_a_go_server() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("http-curl");
    let binary = copy_binary(&fixture("1.27", "exe", "httpfixture"), &dir, "httpfixture");
    let tlstap = Tlstap::start(&dir, &["--data", "-e", binary.to_str().unwrap()]);
    let manifest = dir.path("manifest.jsonl");
    let server = Server::start(&binary, &manifest, &["--proto", "h2"]);
    let mut sent = BTreeMap::new();
    for (flag, proto) in [("--http2", "h2"), ("--http1.1", "http/1.1"), ("--http2", "h2")] {
        let nonce = nonce();
        let (body_file, head_file) = (dir.path(&format!("{nonce}.body")), dir.path(&format!("{nonce}.head")));
        let request_body = format!("{nonce} curl {flag} body");
        let out = Command::new("curl")
            .args(["-sS", "-k", "--noproxy", "*", "--fail", flag, "-X", "POST", "--data-binary", &request_body])
            .args(["-H", &format!("X-Nonce: {nonce}"), "-H", "Accept-Encoding: gzip"])
            .arg("-o")
            .arg(&body_file)
            .arg("-D")
            .arg(&head_file)
            .arg(format!("https://{}/echo?size=3000&enc=gzip&trailer=0", server.addr))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl {flag}: {}", String::from_utf8_lossy(&out.stderr));
        sent.insert(nonce, (proto, request_body, body_file, head_file));
    }
    server.stop();
    let capture = tlstap.stop();
    let records = http_records(&capture);
    assert_eq!(records.len(), 3, "one exchange per curl");
    for record in records {
        assert_eq!(record["program"], "server");
        let body = b64(record["request"]["body_b64"].as_str().unwrap());
        let nonce = String::from_utf8_lossy(&body[..16]).into_owned();
        let (proto, request_body, body_file, head_file) = &sent[&nonce];
        assert_eq!(record["proto"], *proto);
        assert_eq!(b64(record["request"]["body_b64"].as_str().unwrap()), request_body.as_bytes());
        let user_agent = header_map(&record["request"]["headers"])["user-agent"][0].clone();
        assert!(user_agent.starts_with("curl/"), "{user_agent}");
        // curl wrote the body as received (it does not decompress without --compressed).
        let received = std::fs::read(body_file).unwrap();
        let response = &record["response"];
        let raw = response["raw_body_b64"].as_str().map(b64).expect("gzip: the transferred bytes are kept");
        assert!(raw == received, "{nonce}: {}", first_difference(&raw, &received));
        assert_eq!(b64(response["body_b64"].as_str().unwrap()).len(), 3000, "decoded");
        // Every header curl received, in order (names lowercase in HTTP/2).
        let head = std::fs::read_to_string(head_file).unwrap();
        let curl_fields: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim_end().to_string()))
            .collect();
        let ours: Vec<(String, String)> = response["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f[0].as_str().unwrap().to_ascii_lowercase(), f[1].as_str().unwrap().to_string()))
            .filter(|(n, _)| !n.starts_with(':'))
            .collect();
        assert_eq!(ours, curl_fields, "{nonce} ({proto}): response headers");
    }
}

/// tlstap joins an HTTP/2 connection whose HPACK tables are in use (three requests done
/// before it starts). No header may be wrong: every field it shows is one the peer sent, those
/// it cannot know are marked, and every later request is decoded with its bodies.
#[test]
fn joining_a_live_h2_connection_never_shows_a_wrong_header() {
    if privileged() {
        assert!(join_live_h2_connection("1.27", "exe", false, &[]) > 0, "the test must join tables in use");
    }
}

/// The same with --h2-hooks: the fields come from Go's own HTTP/2 code, so every header of
/// every exchange is known and equals what the peer's net/http saw. Go 1.27's framer returns a
/// `Frame` interface, Go 1.19's a pointer, Go 1.15's on the stack (ABI0); the 1.27 binary is a
/// stripped PIE.
#[test]
fn joining_a_live_h2_connection_with_go_hooks_shows_every_header() {
    if privileged() {
        // The hook programs on both attach paths: one uprobe_multi link, and a link per offset
        // (kernels 5.15 to 6.5).
        let per_offset = ["--disable-feature", "uprobe-multi"];
        for (go, variant, extra) in [
            ("1.27", "pie-strip", &[][..]),
            ("1.19", "exe", &[][..]),
            ("1.15", "exe", &[][..]),
            ("1.27", "exe", &per_offset[..]),
        ] {
            let undecodable = join_live_h2_connection(go, variant, true, extra);
            assert_eq!(undecodable, 0, "go{go} {variant} {extra:?}: undecodable fields");
        }
    }
}

/// Runs the joining scenario and checks every exchange (exactly, with `hooks`); returns how
/// many header fields were undecodable.
fn join_live_h2_connection(go: &str, variant: &str, hooks: bool, extra: &[&str]) -> usize {
    let dir = TempDir::new(&format!("http-joined-{go}-{variant}-{hooks}-{}", extra.len()));
    let binary = copy_binary(&fixture(go, variant, "httpfixture"), &dir, "httpfixture");
    let manifest = dir.path("manifest.jsonl");
    let server = Server::start(&binary, &manifest, &["--proto", "h2"]);
    let mut client = Proc::spawn(
        Command::new(&binary)
            .args(["client", "--addr", &server.addr, "--manifest"])
            .arg(&manifest)
            .args(["--requests", "8", "--pause-after", "3", "--sizes", "10,2000"])
            .stdin(Stdio::piped()),
        "fixture client",
    );
    let deadline = std::time::Instant::now() + patience(30);
    while manifest_by_nonce(&manifest, "client").len() < 3 {
        assert!(std::time::Instant::now() < deadline, "the client's first requests did not finish");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut args = vec!["--data", "-e", binary.to_str().unwrap()];
    if hooks {
        args.push("--h2-hooks");
    }
    args.extend(extra);
    let tlstap = Tlstap::start(&dir, &args);
    client.child.stdin.take().unwrap().write_all(b"go on\n").unwrap();
    assert!(client.wait_timeout(patience(60)).success());
    let addr = server.addr.clone();
    server.stop();
    let capture = tlstap.stop();

    let (servers, clients) = (manifest_by_nonce(&manifest, "server"), manifest_by_nonce(&manifest, "client"));
    let records = http_records(&capture);
    let mut undecodable = 0;
    for program in ["client", "server"] {
        // A Read already waiting when tlstap attached is not seen (its entry probe was never
        // hit), so the first exchange after joining may lack its request or response; every
        // later one is whole.
        let mine: Vec<_> = records.iter().filter(|r| r["program"] == program).collect();
        let whole: BTreeSet<String> = mine
            .iter()
            .filter(|r| r["request"].is_object() && r["response"].is_object())
            .map(|r| nonce_of(r, &clients))
            .collect();
        assert!(whole.len() >= 4, "{program}: the requests after joining, but perhaps the first");
        assert!(mine.len() <= 5, "{program}: no exchange twice");
        for record in mine {
            let what = format!("{program} stream {}", record["stream_id"]);
            let request_nonce = record["request"].is_object().then(|| nonce_of(record, &clients));
            // A response alone is matched by its body (decoded, or not when its Content-Encoding
            // field was one tlstap could not know: then as transferred, of the same length).
            let response = &record["response"];
            let response_nonce = response["body_b64"].as_str().and_then(|body| {
                let body = b64(body);
                let found = clients.values().find(|c| b64(c["body_b64"].as_str().unwrap()) == body).or_else(|| {
                    let undecoded = response["body_decoded"] == false;
                    clients.values().find(|c| undecoded && c["raw_len"] == response["body_len"])
                });
                found.map(|c| c["nonce"].as_str().unwrap().to_string())
            });
            if response.is_object() {
                assert!(response_nonce.is_some() || request_nonce.is_some(), "{what}: a response no client received");
            }
            let nonce = request_nonce.clone().or(response_nonce).unwrap_or_else(|| panic!("{what}: neither part"));
            let (server_side, client_side) = (&servers[&nonce], &clients[&nonce]);
            if let Some(body) = record["request"]["body_b64"].as_str() {
                assert_eq!(b64(body), b64(server_side["body_b64"].as_str().unwrap()), "{what}");
            }
            if let Some(body) = response["body_b64"].as_str() {
                let body = b64(body);
                if response["body_decoded"] == true || client_side["headers"]["Content-Encoding"].is_null() {
                    assert_eq!(body, b64(client_side["body_b64"].as_str().unwrap()), "{what}: response body");
                } else {
                    // Not decoded: only because the Content-Encoding field itself was undecodable.
                    assert_eq!(response["body_len"], client_side["raw_len"], "{what}");
                    let shown = header_map_partial(&response["headers"]);
                    assert!(!shown.contains_key("content-encoding"), "{what}: encoding known but not decoded");
                }
            }
            for (message, oracle) in [(&record["request"], server_side), (&record["response"], client_side)] {
                let truth = go_header_map(&oracle["headers"], "");
                for field in message["headers"].as_array().into_iter().flatten() {
                    let (name, value) = (field[0].as_str(), field[1].as_str());
                    let fits = |n: &str, v: Option<&str>| match n {
                        ":method" => v.is_none_or(|v| v == "POST"),
                        ":path" => v.is_none_or(|v| v == server_side["path"]),
                        ":status" => v.is_none_or(|v| v == "200"),
                        ":scheme" => v.is_none_or(|v| v == "https"),
                        ":authority" => v.is_none_or(|v| v == addr),
                        n => truth.get(n).is_some_and(|vs| v.is_none_or(|v| vs.iter().any(|t| t == v))),
                    };
                    let right = match name {
                        Some(n) => fits(&n.to_ascii_lowercase(), value),
                        None => {
                            undecodable += 1;
                            value.is_none_or(|v| {
                                truth.values().flatten().any(|t| t == v) || v == server_side["path"] || v == "200"
                            })
                        }
                    };
                    assert!(right, "{what}: wrong header {field}");
                }
            }
            let shown = [&record["method"], &record["path"], &record["status"]];
            assert!(shown[0].is_null() || shown[0] == "POST", "{what}");
            assert!(shown[1].is_null() || *shown[1] == server_side["path"], "{what}");
            assert!(shown[2].is_null() || shown[2] == 200, "{what}");
            if hooks {
                // Every field known: the headers are exactly what each peer's net/http saw.
                if record["request"].is_object() {
                    let got = header_map(&record["request"]["headers"]);
                    assert_eq!(got, go_header_map(&server_side["headers"], ""), "{what}: request headers");
                }
                if response.is_object() {
                    let got = header_map(&response["headers"]);
                    assert_eq!(got, go_header_map(&client_side["headers"], ""), "{what}: response headers");
                    let body = response["body_b64"].as_str().map(b64);
                    assert_eq!(body, client_side["body_b64"].as_str().map(b64), "{what}: response body decoded");
                }
            }
        }
    }
    eprintln!(
        "joined mid-connection (go{go} {variant}, hooks {hooks}): {undecodable} fields undecodable (the HPACK \
         entries were made before tlstap started)"
    );
    undecodable
}

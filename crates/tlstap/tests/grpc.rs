//! gRPC decoded against grpc-go's own view: the fixture (testdata/go/grpcfixture, grpc-go 1.33
//! from Debian, Go 1.19) makes unary, server-streaming (gzip-compressed messages) and
//! client-streaming calls, and one that fails, over one connection; both sides write what they
//! sent and received at the gRPC level (messages as serialized, metadata, status) to a
//! manifest. Every call tlstap decodes, on each side, must match it byte for byte, and tshark's
//! HTTP/2 dissector must show the same header fields per stream; joined mid-connection with
//! --h2-hooks, every header too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// Manifest lines of one side, by nonce.
fn by_nonce(path: &std::path::Path, side: &str) -> BTreeMap<String, Value> {
    read_jsonl(path)
        .into_iter()
        .filter(|v| v["side"] == side)
        .map(|v| (v["nonce"].as_str().unwrap().to_string(), v))
        .collect()
}

/// The values of field `name` (lowercase) among decoded header fields.
fn values(headers: &Value, name: &str) -> Vec<String> {
    headers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|f| f[1].as_str().expect("decoded value").to_string())
        .collect()
}

fn messages(message: &Value) -> Vec<Vec<u8>> {
    message["grpc_messages"].as_array().into_iter().flatten().map(|m| b64(m["data_b64"].as_str().unwrap())).collect()
}

fn manifest_messages(line: &Value, key: &str) -> Vec<Vec<u8>> {
    line[key].as_array().unwrap().iter().map(|m| b64(m.as_str().unwrap())).collect()
}

/// One decoded call against both sides' manifest lines.
fn assert_call_matches(record: &Value, server: &Value, client: &Value) {
    let what = format!("{} call {} ({})", record["program"], client["nonce"], client["method"]);
    assert_eq!(record["proto"], "grpc", "{what}");
    assert_eq!(record["undecodable_fields"], false, "{what}");
    assert_eq!((record["method"].as_str(), record["path"].as_str()), (Some("POST"), client["method"].as_str()));
    assert_eq!(record["status"], 200, "{what}");
    let (request, response) = (&record["request"], &record["response"]);
    // Request metadata as grpc-go's server read it (pseudo-headers but :authority aside).
    for (name, want) in server["metadata"].as_object().unwrap() {
        let want: Vec<String> = want.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert_eq!(values(&request["headers"], name), want, "{what}: request {name}");
    }
    // Response header and trailer metadata as the client got them.
    for (name, want) in client["header"].as_object().unwrap() {
        assert_eq!(values(&response["headers"], name), [want[0].as_str().unwrap()], "{what}: header {name}");
    }
    for (name, want) in client["trailer"].as_object().unwrap() {
        assert_eq!(values(&response["trailers"], name), [want[0].as_str().unwrap()], "{what}: trailer {name}");
    }
    assert_eq!(record["grpc_status"], client["status_code"], "{what}");
    let message = client["status_message"].as_str().unwrap();
    if !message.is_empty() {
        assert_eq!(record["grpc_message"].as_str(), Some(message), "{what}");
    }
    // Every message, as serialized, in order; Stream's are gzip-compressed on the wire.
    assert_eq!(messages(request), manifest_messages(server, "requests_b64"), "{what}: request messages");
    assert_eq!(messages(response), manifest_messages(client, "responses_b64"), "{what}: response messages");
    let compressed = client["method"] == "/tlstap.test.Echo/Stream";
    for m in [request, response].iter().flat_map(|m| m["grpc_messages"].as_array().into_iter().flatten()) {
        assert_eq!((m["compressed"].as_bool(), m["decoded"].as_bool()), (Some(compressed), Some(true)), "{what}");
    }
    assert_eq!((request["complete"].as_bool(), response["complete"].as_bool()), (Some(true), Some(true)), "{what}");
}

/// The call a record is: the x-nonce of its request.
fn nonce_of(record: &Value) -> String {
    values(&record["request"]["headers"], "x-nonce").pop().expect("every call carries x-nonce")
}

#[test]
fn grpc_go_client_and_server_match_their_manifests() {
    if !privileged() {
        return;
    }
    for variant in ["exe", "pie-strip"] {
        let dir = TempDir::new(&format!("grpc-{variant}"));
        let binary = copy_binary(&fixture("1.19", variant, "grpcfixture"), &dir, "grpcfixture");
        let keys = dir.path("keys.log");
        let tlstap = Tlstap::start(&dir, &["--data", "-e", binary.to_str().unwrap(), "-k", keys.to_str().unwrap()]);
        let manifest = dir.path("manifest.jsonl");
        let server = Server::start(&binary, &manifest, &[]);
        // The plain build's connection is also decrypted by tshark, with tlstap's key log.
        let port: u16 = server.addr.rsplit(':').next().unwrap().parse().unwrap();
        let witness = (variant == "exe").then(|| Tshark::start(&dir.path("wire.pcapng"), port));
        if witness.is_some() {
            // tshark says it is capturing a little before its filter is in place.
            std::thread::sleep(std::time::Duration::from_millis(1000));
        }
        run_client(&binary, &server.addr, &manifest, &["--calls", "8", "--sizes", "10,1000,20000"]);
        let wire = witness.map(Tshark::stop);
        server.stop();
        let capture = tlstap.stop();
        let (servers, clients) = (by_nonce(&manifest, "server"), by_nonce(&manifest, "client"));
        assert_eq!(clients.len(), 8);
        for program in ["client", "server"] {
            let mine: Vec<&Value> =
                capture.records.iter().filter(|r| r["type"] == "http" && r["program"] == program).collect();
            assert_eq!(mine.len(), 8, "{variant} {program}: one exchange per call");
            for record in mine {
                let nonce = nonce_of(record);
                assert_call_matches(record, &servers[&nonce], &clients[&nonce]);
            }
        }
        if let Some(wire) = wire {
            let records: Vec<&Value> = capture.records.iter().filter(|r| r["type"] == "http").collect();
            assert_tshark_agrees(&wire, &keys, &records);
        }
    }
}

/// Joining a gRPC connection after four calls, with --h2-hooks: grpc-go's own header fields
/// (x/net's hpack encoder and framer) make every later call whole, headers included.
#[test]
fn grpc_joined_mid_connection_with_go_hooks_is_whole() {
    if !privileged() {
        return;
    }
    let dir = TempDir::new("grpc-joined");
    let binary = copy_binary(&fixture("1.19", "pie-strip", "grpcfixture"), &dir, "grpcfixture");
    let manifest = dir.path("manifest.jsonl");
    let server = Server::start(&binary, &manifest, &[]);
    let mut client = Proc::spawn(
        Command::new(&binary)
            .args(["client", "--addr", &server.addr, "--manifest"])
            .arg(&manifest)
            .args(["--calls", "12", "--pause-after", "4", "--sizes", "10,1000"])
            .stdin(Stdio::piped()),
        "fixture client",
    );
    let deadline = std::time::Instant::now() + patience(30);
    while by_nonce(&manifest, "client").len() < 4 {
        assert!(std::time::Instant::now() < deadline, "the client's first calls did not finish");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let tlstap = Tlstap::start(&dir, &["--data", "-e", binary.to_str().unwrap(), "--h2-hooks"]);
    client.child.stdin.take().unwrap().write_all(b"go on\n").unwrap();
    assert!(client.wait_timeout(patience(60)).success());
    server.stop();
    let capture = tlstap.stop();
    let (servers, clients) = (by_nonce(&manifest, "server"), by_nonce(&manifest, "client"));
    for program in ["client", "server"] {
        // A Read already waiting when tlstap attached is not seen: the first call after joining
        // may lack a part; the 7 after it are whole.
        let whole: Vec<&Value> = capture
            .records
            .iter()
            .filter(|r| r["type"] == "http" && r["program"] == program)
            .filter(|r| r["request"].is_object() && r["response"].is_object())
            .collect();
        assert!(whole.len() >= 7, "{program}: {} whole calls after joining", whole.len());
        for record in whole {
            let nonce = nonce_of(record);
            assert_call_matches(record, &servers[&nonce], &clients[&nonce]);
        }
    }
}

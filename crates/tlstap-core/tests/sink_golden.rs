//! Golden files for every record kind of the text, hex and JSONL sinks, each also checked by an
//! independent oracle (serde_json parsing, humantime parsing, `format!` hex) so a wrongly
//! blessed golden file does not go unnoticed.
// An integration test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::golden;
use serde_json::Value;
use tlstap_core::event::{AttachEvent, ConnInfo, ConnKind, DataEvent, Direction, Event, LossCause, SecretEvent, Stats};
use tlstap_core::sink::{JsonlSink, PayloadStyle, Sink, TextSink};

const TS: u64 = 1_700_000_000_123_456_789;

fn jsonl(events: &[Event<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sink = JsonlSink::new(&mut out);
    for e in events {
        sink.write_event(e).unwrap();
    }
    sink.flush().unwrap();
    out
}

fn text(style: PayloadStyle, events: &[Event<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sink = TextSink::new(&mut out, style);
    for e in events {
        sink.write_event(e).unwrap();
    }
    sink.flush().unwrap();
    out
}

/// Each JSONL line parsed by serde_json (the oracle for validity and values).
fn parse_lines(out: &[u8]) -> Vec<Value> {
    let s = std::str::from_utf8(out).unwrap();
    assert!(s.ends_with('\n'));
    s.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn conn() -> ConnInfo {
    ConnInfo {
        kind: ConnKind::Tcp,
        fd: Some(7),
        local: Some("127.0.0.1:8443".parse().unwrap()),
        remote: Some("127.0.0.1:51000".parse().unwrap()),
        id: "c1".into(),
    }
}

fn data_events(c: &ConnInfo) -> Vec<Event<'_>> {
    vec![
        Event::Data(DataEvent {
            ts_ns: TS,
            pid: 1234,
            tid: 1235,
            comm: "server",
            direction: Direction::Read,
            len: 18,
            data: b"GET / HTTP/1.1\r\n\r\n",
            truncated: false,
            conn: Some(c),
            cgroup: None,
        }),
        Event::Data(DataEvent {
            ts_ns: TS + 1,
            pid: 1234,
            tid: 1236,
            comm: "server",
            direction: Direction::Write,
            len: 40_000,
            data: &[0, 1, 2, 0xff, b'A'],
            truncated: true,
            conn: None,
            cgroup: None,
        }),
    ]
}

fn attach_event() -> Event<'static> {
    Event::Attach(AttachEvent { binary: Path::new("/srv/server"), go_version: "go1.22.5", abi: "register", probes: 5 })
}

fn stats() -> Stats {
    Stats {
        events: 10,
        bytes: 2048,
        lost: 3,
        lost_by_cause: BTreeMap::from([(LossCause::RingbufFull, 2), (LossCause::ReadFault, 1)]),
        binaries_not_hooked: 1,
    }
}

const CLIENT_RANDOM: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, //
    0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f,
];
/// Contains zero bytes: a secret is binary and must never be cut at the first NUL.
const SECRET: [u8; 32] = [
    0xde, 0xad, 0x00, 0xbe, 0xef, 0x00, 0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, //
    0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0xAB, 0xCD, 0xEF, 0x01, 0x23, 0x45, 0x67, 0x89, 0x00, 0xff,
];

pub fn secret_events() -> Vec<Event<'static>> {
    vec![
        Event::Secret(SecretEvent {
            ts_ns: TS,
            pid: 1234,
            label: "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
            client_random: &CLIENT_RANDOM,
            secret: &SECRET,
        }),
        Event::Secret(SecretEvent {
            ts_ns: TS + 5,
            pid: 1234,
            label: "CLIENT_RANDOM",
            client_random: &CLIENT_RANDOM,
            secret: &[0x5a; 48],
        }),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn jsonl_data() {
    let c = conn();
    let out = jsonl(&data_events(&c));
    golden("jsonl_data.jsonl", &out);
    let v = parse_lines(&out);
    assert_eq!(v[0]["type"], "data");
    assert_eq!(v[0]["conn"]["local"], "127.0.0.1:8443");
    assert_eq!(v[1]["data_b64"], "AAEC/0E=");
    assert_eq!(v[1]["conn"], Value::Null);
    assert_eq!(v[1]["truncated"], true);
}

#[test]
fn jsonl_attach() {
    let out = jsonl(&[attach_event()]);
    golden("jsonl_attach.jsonl", &out);
    let v = parse_lines(&out);
    assert_eq!(v[0]["type"], "attach");
    assert_eq!(v[0]["probes"], 5);
}

#[test]
fn jsonl_stats() {
    let s = stats();
    let out = jsonl(&[Event::Stats(&s)]);
    golden("jsonl_stats.jsonl", &out);
    let v = parse_lines(&out);
    assert_eq!(v[0]["lost_by_cause"]["ringbuf_full"], 2);
}

#[test]
fn jsonl_secret() {
    let out = jsonl(&secret_events());
    golden("jsonl_secret.jsonl", &out);
    let v = parse_lines(&out);
    assert_eq!(v[0]["client_random"], hex(&CLIENT_RANDOM));
    assert_eq!(v[0]["secret"], hex(&SECRET));
    assert_eq!(v[1]["secret"], "5a".repeat(48));
    // Exactly these keys, in this order (serde_json's Value would sort them, so check text).
    let first = std::str::from_utf8(&out).unwrap().lines().next().unwrap();
    let expected = format!(
        r#"{{"type":"secret","ts_ns":{TS},"pid":1234,"label":"CLIENT_HANDSHAKE_TRAFFIC_SECRET","client_random":"{}","secret":"{}"}}"#,
        hex(&CLIENT_RANDOM),
        hex(&SECRET)
    );
    assert_eq!(first, expected);
}

#[test]
fn text_data() {
    let c = conn();
    golden("text_data.txt", &text(PayloadStyle::Auto, &data_events(&c)));
    golden("hex_data.txt", &text(PayloadStyle::Hex, &data_events(&c)));
}

#[test]
fn text_attach() {
    let out = text(PayloadStyle::Auto, &[attach_event()]);
    golden("text_attach.txt", &out);
    assert_eq!(out, text(PayloadStyle::Hex, &[attach_event()]));
}

#[test]
fn text_stats_render_nothing() {
    // The summary goes to stderr from the caller; the text stream stays payload.
    let s = stats();
    assert!(text(PayloadStyle::Auto, &[Event::Stats(&s)]).is_empty());
    assert!(text(PayloadStyle::Hex, &[Event::Stats(&s)]).is_empty());
}

#[test]
fn text_secret() {
    let out = text(PayloadStyle::Auto, &secret_events());
    golden("text_secret.txt", &out);
    assert_eq!(out, text(PayloadStyle::Hex, &secret_events()));
    let s = String::from_utf8(out).unwrap();
    let records: Vec<&str> = s.split_terminator("\n\n").collect();
    assert_eq!(records.len(), 2);
    let f: Vec<&str> = records[0].split(' ').collect();
    let t = humantime::parse_rfc3339(f[0]).unwrap();
    assert_eq!(t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos(), u128::from(TS));
    assert_eq!(&f[1..], ["pid=1234", "secret", "CLIENT_HANDSHAKE_TRAFFIC_SECRET", &hex(&CLIENT_RANDOM), &hex(&SECRET)]);
}

#[test]
fn text_secret_with_forged_label_stays_one_line() {
    let ev =
        Event::Secret(SecretEvent { ts_ns: 0, pid: 1, label: "X\nCLIENT_RANDOM", client_random: &[1], secret: &[2] });
    let out = String::from_utf8(text(PayloadStyle::Auto, &[ev])).unwrap();
    assert_eq!(out, "1970-01-01T00:00:00.000000000Z pid=1 secret \"X\\nCLIENT_RANDOM\" 01 02\n\n");
}

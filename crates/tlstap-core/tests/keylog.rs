//! The NSS key log sink: golden output, one complete line per write followed by a flush,
//! deduplication, and that it ignores every event but secrets. Wireshark reading its output is
//! checked end to end in `pcapng_oracle.rs`.
// An integration test crate: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{self, Write};
use std::path::Path;

use common::golden;
use tlstap_core::event::{AttachEvent, Event, SecretEvent, Stats};
use tlstap_core::sink::{KeylogSink, Sink};

const CR: [u8; 32] = [0xc1; 32];
const CR2: [u8; 32] = [0x02; 32];
const SECRET: [u8; 8] = [0xde, 0xad, 0x00, 0x00, 0xbe, 0xef, 0x00, 0x01];

fn secret<'a>(label: &'a str, client_random: &'a [u8], secret: &'a [u8]) -> Event<'a> {
    Event::Secret(SecretEvent { ts_ns: 1, pid: 42, label, client_random, secret })
}

/// Records each `write` call's bytes and where flushes happened.
#[derive(Default)]
struct Recorder {
    ops: Vec<Op>,
}

#[derive(Debug, PartialEq)]
enum Op {
    Write(Vec<u8>),
    Flush,
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ops.push(Op::Write(buf.to_vec()));
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.ops.push(Op::Flush);
        Ok(())
    }
}

fn events<'a>(stats: &'a Stats) -> Vec<Event<'a>> {
    vec![
        Event::Attach(AttachEvent {
            binary: Path::new("/srv/server"),
            go_version: "go1.22",
            abi: "register",
            probes: 5,
        }),
        secret("SERVER_HANDSHAKE_TRAFFIC_SECRET", &CR, &SECRET),
        secret("CLIENT_TRAFFIC_SECRET_0", &CR, &[0x11; 32]),
        secret("SERVER_HANDSHAKE_TRAFFIC_SECRET", &CR, &SECRET), // duplicate
        secret("CLIENT_RANDOM", &CR2, &[0x00; 48]),
        secret("CLIENT_TRAFFIC_SECRET_0", &CR, &[0x11; 32]), // duplicate
        Event::Stats(stats),
    ]
}

#[test]
fn golden_lines_one_write_and_flush_each() {
    let stats = Stats::default();
    let mut sink = KeylogSink::new(Recorder::default());
    for e in events(&stats) {
        sink.write_event(&e).unwrap();
    }
    let ops = sink.into_inner().ops;
    let mut text = Vec::new();
    for pair in ops.chunks(2) {
        let [Op::Write(line), Op::Flush] = pair else { panic!("expected write then flush, got {pair:?}") };
        assert!(line.ends_with(b"\n") && line.iter().filter(|&&b| b == b'\n').count() == 1);
        text.extend_from_slice(line);
    }
    golden("keylog.log", &text);

    // Oracle: each line is LABEL, then format!-hex of client random and secret, deduplicated.
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let expected = [
        format!("SERVER_HANDSHAKE_TRAFFIC_SECRET {} {}", hex(&CR), hex(&SECRET)),
        format!("CLIENT_TRAFFIC_SECRET_0 {} {}", hex(&CR), hex(&[0x11; 32])),
        format!("CLIENT_RANDOM {} {}", hex(&CR2), hex(&[0; 48])),
    ];
    assert_eq!(String::from_utf8(text).unwrap().lines().collect::<Vec<_>>(), expected);
}

#[test]
fn dedupes_across_the_whole_run() {
    let mut sink = KeylogSink::new(Vec::new());
    for _ in 0..3 {
        for i in 0u8..50 {
            sink.write_event(&secret("CLIENT_RANDOM", &[i; 32], &[i; 48])).unwrap();
        }
    }
    let out = String::from_utf8(sink.into_inner()).unwrap();
    assert_eq!(out.lines().count(), 50);
    // Same label and secret with another client random is another line.
    let mut sink = KeylogSink::new(Vec::new());
    sink.write_event(&secret("CLIENT_RANDOM", &CR, &SECRET)).unwrap();
    sink.write_event(&secret("CLIENT_RANDOM", &CR2, &SECRET)).unwrap();
    sink.write_event(&secret("CLIENT_TRAFFIC_SECRET_0", &CR, &SECRET)).unwrap();
    assert_eq!(String::from_utf8(sink.into_inner()).unwrap().lines().count(), 3);
}

/// A writer that fails the first `fail` writes.
struct Flaky {
    fail: usize,
    out: Vec<u8>,
}

impl Write for Flaky {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.fail > 0 {
            self.fail -= 1;
            return Err(io::Error::other("disk full"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn failed_line_is_not_remembered() {
    let mut sink = KeylogSink::new(Flaky { fail: 1, out: Vec::new() });
    let ev = secret("CLIENT_RANDOM", &CR, &SECRET);
    assert!(sink.write_event(&ev).is_err());
    sink.write_event(&ev).unwrap();
    assert_eq!(sink.into_inner().out.iter().filter(|&&b| b == b'\n').count(), 1);
}

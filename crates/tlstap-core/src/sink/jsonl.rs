//! JSON Lines output: one object per event, the stable contract scripts parse (see README).
//! Field names and meanings must not change; new fields may be added. Secrets are lowercase hex.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use super::{json, push_decimal, Sink};
use crate::event::{DataEvent, Event};
use crate::hex::push_hex_str;
use crate::names::escape_path;

#[derive(Debug)]
pub struct JsonlSink<W: Write> {
    out: W,
    /// Reused for every data and HTTP line, built whole and written once, so the hot path does
    /// not allocate.
    line: Vec<u8>,
    /// Reused for a secret's client random and secret, hex, back to back.
    hex: String,
}

impl<W: Write> JsonlSink<W> {
    pub fn new(out: W) -> Self {
        JsonlSink { out, line: Vec::new(), hex: String::new() }
    }

    /// The writer, back (tests read what was rendered).
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Record<'a> {
    // Paths as names.rs writes them: a path that is not UTF-8 must not end the capture.
    Attach {
        binary: Cow<'a, str>,
        go_version: &'a str,
        abi: &'a str,
        probes: usize,
    },
    Detach {
        binary: Cow<'a, str>,
    },
    Secret {
        ts_ns: u64,
        pid: u32,
        label: &'a str,
        client_random: &'a str,
        secret: &'a str,
    },
    Stats {
        events: u64,
        bytes: u64,
        lost: u64,
        /// By name: the keys sort as the README lists them, alphabetically.
        lost_by_cause: BTreeMap<&'static str, u64>,
        binaries_not_hooked: u64,
    },
    Ready {
        binaries: usize,
        processes: usize,
    },
}

impl<W: Write> JsonlSink<W> {
    /// The hot path, written by hand into one reused line: serde would JSON-escape the base64
    /// payload byte by byte (measured: 40% of the consumer's time on large bodies), and going
    /// through `write!` and serde for each field was half of what was left (bench: perf
    /// profile of tlstap). Keys and their order are the same as the other records' derive
    /// would give; `tests::data_line_matches_serde` holds the two together.
    fn write_data(&mut self, d: &DataEvent<'_>) -> io::Result<()> {
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(br#"{"type":"data","ts_ns":"#);
        push_decimal(line, d.ts_ns);
        line.extend_from_slice(br#","pid":"#);
        push_decimal(line, d.pid);
        line.extend_from_slice(br#","tid":"#);
        push_decimal(line, d.tid);
        line.extend_from_slice(br#","comm":"#);
        json::push_str(line, d.comm);
        line.extend_from_slice(br#","direction":""#);
        line.extend_from_slice(d.direction.as_str().as_bytes());
        line.extend_from_slice(br#"","len":"#);
        push_decimal(line, d.len);
        line.extend_from_slice(br#","data_b64":"#);
        json::push_base64(line, d.data);
        line.extend_from_slice(if d.truncated { br#","truncated":true"# } else { br#","truncated":false"# });
        line.extend_from_slice(br#","conn":"#);
        json::push_conn(line, d.conn);
        if let Some(cgroup) = d.cgroup {
            line.extend_from_slice(br#","cgroup":"#);
            json::push_str(line, cgroup);
        }
        line.extend_from_slice(b"}\n");
        self.out.write_all(line)
    }
}

impl<W: Write> Sink for JsonlSink<W> {
    fn write_event(&mut self, event: &Event<'_>) -> io::Result<()> {
        let record = match event {
            Event::Attach(a) => {
                Record::Attach { binary: escape_path(a.binary), go_version: a.go_version, abi: a.abi, probes: a.probes }
            }
            Event::Data(d) => return self.write_data(d),
            Event::Http(h) => {
                self.line.clear();
                super::http_json::push_record(&mut self.line, h);
                return self.out.write_all(&self.line);
            }
            Event::Secret(k) => {
                self.hex.clear();
                push_hex_str(&mut self.hex, k.client_random);
                let split = self.hex.len();
                push_hex_str(&mut self.hex, k.secret);
                let (client_random, secret) = self.hex.split_at(split);
                Record::Secret { ts_ns: k.ts_ns, pid: k.pid, label: k.label, client_random, secret }
            }
            Event::Detach { binary } => Record::Detach { binary: escape_path(binary) },
            Event::Ready { binaries, processes } => Record::Ready { binaries: *binaries, processes: *processes },
            Event::Stats(s) => Record::Stats {
                events: s.events,
                bytes: s.bytes,
                lost: s.lost,
                lost_by_cause: s.lost_by_cause.iter().map(|(c, n)| (c.name(), *n)).collect(),
                binaries_not_hooked: s.binaries_not_hooked,
            },
        };
        serde_json::to_writer(&mut self.out, &record)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;
    use crate::event::{ConnInfo, ConnKind, Direction};
    use crate::sink::http_json::ConnRecord;

    /// The data record as serde would render it: the reference for the hand-written line.
    #[derive(Serialize)]
    struct SerdeData<'a> {
        r#type: &'static str,
        ts_ns: u64,
        pid: u32,
        tid: u32,
        comm: &'a str,
        direction: &'static str,
        len: u64,
        data_b64: String,
        truncated: bool,
        conn: Option<ConnRecord<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cgroup: Option<&'a str>,
    }

    fn serde_line(d: &DataEvent<'_>) -> String {
        let conn = d.conn.map(ConnRecord::new);
        let record = SerdeData {
            r#type: "data",
            ts_ns: d.ts_ns,
            pid: d.pid,
            tid: d.tid,
            comm: d.comm,
            direction: d.direction.as_str(),
            len: d.len,
            data_b64: base64::engine::general_purpose::STANDARD.encode(d.data),
            truncated: d.truncated,
            conn,
            cgroup: d.cgroup,
        };
        serde_json::to_string(&record).unwrap() + "\n"
    }

    #[test]
    fn data_line_matches_serde() {
        let plain = ConnInfo {
            kind: ConnKind::Tcp,
            fd: Some(7),
            local: Some("127.0.0.1:443".parse().unwrap()),
            remote: Some("[::1]:50000".parse().unwrap()),
            id: "00ff".into(),
        };
        let odd =
            ConnInfo { kind: ConnKind::Unknown, fd: None, local: None, remote: None, id: "a\"b\\c\u{1}é".into() };
        let payloads: [&[u8]; 5] = [b"", b"a", b"ab", b"abc", &[0u8, 255, 34, 92, 10, 1, 2, 3, 4, 5, 6, 7, 8]];
        let mut sink = JsonlSink::new(Vec::new());
        let mut expected = String::new();
        for (i, data) in payloads.iter().enumerate() {
            for (conn, comm, cgroup) in [
                (Some(&plain), "server", Some("/system.slice/x.service")),
                (Some(&odd), "we\"ird\tname\u{7f}", Some("/a\\b\n")),
                (None, "", None),
            ] {
                let event = DataEvent {
                    ts_ns: u64::MAX - i as u64,
                    pid: u32::MAX,
                    tid: 1,
                    comm,
                    direction: if i % 2 == 0 { Direction::Read } else { Direction::Write },
                    len: data.len() as u64 + 5,
                    data,
                    truncated: i % 2 == 1,
                    conn,
                    cgroup,
                };
                sink.write_event(&Event::Data(event.clone())).unwrap();
                expected += &serde_line(&event);
            }
        }
        assert_eq!(String::from_utf8(sink.out).unwrap(), expected);
    }
}

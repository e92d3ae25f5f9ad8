//! JSON Lines output: one object per event, the stable contract scripts parse (see README).
//! Field names and meanings must not change; new fields may be added. Secrets are lowercase hex.

use std::collections::BTreeMap;
use std::io::{self, Write};

use base64::Engine as _;
use serde::Serialize;

use super::Sink;
use crate::event::{ConnInfo, Event};
use crate::hex::push_hex_str;

#[derive(Debug)]
pub struct JsonlSink<W: Write> {
    out: W,
    /// Reused for every payload's base64 so the hot path does not allocate.
    b64: String,
    /// Reused for a secret's client random and secret, hex, back to back.
    hex: String,
}

impl<W: Write> JsonlSink<W> {
    pub fn new(out: W) -> Self {
        JsonlSink { out, b64: String::new(), hex: String::new() }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Record<'a> {
    Attach { binary: &'a std::path::Path, go_version: &'a str, abi: &'a str, probes: usize },
    Data {
        ts_ns: u64,
        pid: u32,
        tid: u32,
        comm: &'a str,
        direction: &'static str,
        len: u64,
        data_b64: &'a str,
        truncated: bool,
        conn: Option<Conn<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cgroup: Option<&'a str>,
    },
    Detach { binary: &'a std::path::Path },
    Secret { ts_ns: u64, pid: u32, label: &'a str, client_random: &'a str, secret: &'a str },
    Stats { events: u64, bytes: u64, lost: u64, lost_by_cause: &'a BTreeMap<&'static str, u64> },
}

#[derive(Serialize)]
struct Conn<'a> {
    kind: &'static str,
    fd: Option<i32>,
    local: Option<&'a str>,
    remote: Option<&'a str>,
    id: &'a str,
}

impl<'a> From<&'a ConnInfo> for Conn<'a> {
    fn from(c: &'a ConnInfo) -> Self {
        Conn { kind: c.kind.as_str(), fd: c.fd, local: c.local.as_deref(), remote: c.remote.as_deref(), id: &c.id }
    }
}

impl<W: Write> Sink for JsonlSink<W> {
    fn write_event(&mut self, event: &Event<'_>) -> io::Result<()> {
        let record = match event {
            Event::Attach(a) => Record::Attach {
                binary: a.binary,
                go_version: a.go_version,
                abi: a.abi,
                probes: a.probes,
            },
            Event::Data(d) => {
                self.b64.clear();
                base64::engine::general_purpose::STANDARD.encode_string(d.data, &mut self.b64);
                Record::Data {
                    ts_ns: d.ts_ns,
                    pid: d.pid,
                    tid: d.tid,
                    comm: d.comm,
                    direction: d.direction.as_str(),
                    len: d.len,
                    data_b64: &self.b64,
                    truncated: d.truncated,
                    conn: d.conn.map(Conn::from),
                    cgroup: d.cgroup,
                }
            }
            Event::Secret(k) => {
                self.hex.clear();
                push_hex_str(&mut self.hex, k.client_random);
                let split = self.hex.len();
                push_hex_str(&mut self.hex, k.secret);
                let (client_random, secret) = self.hex.split_at(split);
                Record::Secret { ts_ns: k.ts_ns, pid: k.pid, label: k.label, client_random, secret }
            }
            Event::Detach { binary } => Record::Detach { binary },
            Event::Stats(s) => Record::Stats {
                events: s.events,
                bytes: s.bytes,
                lost: s.lost,
                lost_by_cause: &s.lost_by_cause,
            },
        };
        serde_json::to_writer(&mut self.out, &record)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

//! The `{"type":"http",...}` JSON Lines record (schema in the README). Field names and meanings
//! must not change; new fields may be added. Header names and values are JSON strings (bytes
//! that are not UTF-8 become U+FFFD); a field tlstap could not decode is `null`.
//!
//! Written by hand straight into the sink's line, as the data records are: building a record
//! of owned strings and serializing it through serde field by field was over a third of the
//! HTTP view's time (bench: httpview_cost). Keys, their order and every value are what the
//! serde derive of `tests::HttpRecord` writes; `tests::records_match_serde` holds the two
//! together.

use super::json::{
    push_base64, push_bool, push_conn, push_lossy, push_opt_decimal, push_opt_lossy, push_opt_str, push_str,
};
use super::push_decimal;
use crate::event::HttpEvent;
use crate::http::{Header, HttpMessage};

/// The serde reference of the `conn` object (jsonl.rs's tests compare the data record with it).
#[cfg(test)]
pub(crate) use tests::ConnRecord;

/// Appends the record of `ev`, with its newline, to `line`.
pub(crate) fn push_record(line: &mut Vec<u8>, ev: &HttpEvent<'_>) {
    let e = ev.exchange;
    line.extend_from_slice(br#"{"type":"http","ts_ns":"#);
    push_decimal(line, e.start_ns());
    line.extend_from_slice(br#","pid":"#);
    push_decimal(line, ev.pid);
    line.extend_from_slice(br#","comm":"#);
    push_str(line, ev.comm);
    line.extend_from_slice(br#","proto":""#);
    line.extend_from_slice(e.proto.as_str().as_bytes());
    line.extend_from_slice(match e.program_is_client {
        true => br#"","program":"client","stream_id":"#,
        false => br#"","program":"server","stream_id":"#,
    });
    push_opt_decimal(line, e.stream_id);
    line.extend_from_slice(br#","method":"#);
    push_opt_str(line, e.method.as_deref());
    line.extend_from_slice(br#","scheme":"#);
    push_opt_str(line, e.scheme.as_deref());
    line.extend_from_slice(br#","authority":"#);
    push_opt_str(line, e.authority.as_deref());
    line.extend_from_slice(br#","path":"#);
    push_opt_str(line, e.path.as_deref());
    line.extend_from_slice(br#","status":"#);
    push_opt_decimal(line, e.status);
    if let Some(status) = e.grpc_status() {
        line.extend_from_slice(br#","grpc_status":"#);
        push_decimal(line, status);
    }
    if let Some(message) = e.grpc_message() {
        line.extend_from_slice(br#","grpc_message":"#);
        push_lossy(line, message);
    }
    line.extend_from_slice(br#","request":"#);
    push_opt_message(line, e.request.as_ref());
    line.extend_from_slice(br#","response":"#);
    push_opt_message(line, e.response.as_ref());
    line.extend_from_slice(br#","request_ns":"#);
    push_opt_decimal(line, e.request_ns);
    line.extend_from_slice(br#","response_ns":"#);
    push_opt_decimal(line, e.response_ns);
    line.extend_from_slice(br#","end_ns":"#);
    push_decimal(line, e.end_ns);
    line.extend_from_slice(br#","latency_ns":"#);
    // `end_ns - request_ns`, when both the request and the response were seen.
    push_opt_decimal(line, e.request_ns.filter(|_| e.response.is_some()).map(|start| e.end_ns.saturating_sub(start)));
    line.extend_from_slice(br#","undecodable_fields":"#);
    push_bool(line, e.has_undecodable_fields());
    line.extend_from_slice(br#","conn":"#);
    push_conn(line, ev.conn);
    if let Some(cgroup) = ev.cgroup {
        line.extend_from_slice(br#","cgroup":"#);
        push_str(line, cgroup);
    }
    line.extend_from_slice(b"}\n");
}

fn push_opt_message(line: &mut Vec<u8>, m: Option<&HttpMessage>) {
    let Some(m) = m else {
        line.extend_from_slice(b"null");
        return;
    };
    line.extend_from_slice(br#"{"headers":"#);
    push_fields(line, &m.headers);
    line.extend_from_slice(br#","trailers":"#);
    push_fields(line, &m.trailers);
    line.extend_from_slice(br#","body_b64":"#);
    push_base64(line, &m.body);
    line.extend_from_slice(br#","body_len":"#);
    push_decimal(line, m.body_len);
    line.extend_from_slice(br#","body_encodings":["#);
    for (i, encoding) in m.encodings.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        push_str(line, encoding);
    }
    line.extend_from_slice(br#"],"body_decoded":"#);
    push_bool(line, m.decoded);
    if let Some(raw) = &m.raw_body {
        line.extend_from_slice(br#","raw_body_b64":"#);
        push_base64(line, raw);
    }
    line.extend_from_slice(br#","body_truncated":"#);
    push_bool(line, m.body_truncated);
    line.extend_from_slice(br#","complete":"#);
    push_bool(line, m.complete);
    if let Some(version) = &m.version {
        line.extend_from_slice(br#","version":"#);
        push_str(line, version);
    }
    if let Some(reason) = &m.reason {
        line.extend_from_slice(br#","reason":"#);
        push_str(line, reason);
    }
    if !m.grpc_messages.is_empty() {
        line.extend_from_slice(br#","grpc_messages":["#);
        for (i, g) in m.grpc_messages.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            line.extend_from_slice(br#"{"compressed":"#);
            push_bool(line, g.compressed);
            line.extend_from_slice(br#","decoded":"#);
            push_bool(line, g.decoded);
            line.extend_from_slice(br#","data_b64":"#);
            push_base64(line, &g.data);
            line.push(b'}');
        }
        line.push(b']');
    }
    line.push(b'}');
}

/// `[[name,value],...]`, each a (lossy) string or `null`.
fn push_fields(line: &mut Vec<u8>, fields: &[Header]) {
    line.push(b'[');
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(b',');
        }
        line.push(b'[');
        push_opt_lossy(line, field.name.as_deref());
        line.push(b',');
        push_opt_lossy(line, field.value.as_deref());
        line.push(b']');
    }
    line.push(b']');
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use serde::Serialize;

    use super::*;
    use crate::event::{ConnInfo, ConnKind, Event};
    use crate::http::{GrpcMessage, HttpExchange, HttpProto};
    use crate::sink::{JsonlSink, Sink};

    // The record as it was serialized with serde before it was written by hand: the reference
    // `push_record` must match, byte for byte.

    #[derive(Serialize)]
    pub(crate) struct HttpRecord<'a> {
        r#type: &'static str,
        ts_ns: u64,
        pid: u32,
        comm: &'a str,
        proto: &'static str,
        /// "client" or "server": the traced program's side of the exchange.
        program: &'static str,
        stream_id: Option<u32>,
        method: Option<&'a str>,
        scheme: Option<&'a str>,
        authority: Option<&'a str>,
        path: Option<&'a str>,
        status: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        grpc_status: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        grpc_message: Option<String>,
        request: Option<MessageRecord<'a>>,
        response: Option<MessageRecord<'a>>,
        request_ns: Option<u64>,
        response_ns: Option<u64>,
        end_ns: u64,
        /// `end_ns - request_ns`, when both the request and the response were seen.
        latency_ns: Option<u64>,
        undecodable_fields: bool,
        conn: Option<ConnRecord<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cgroup: Option<&'a str>,
    }

    #[derive(Serialize)]
    struct MessageRecord<'a> {
        headers: Vec<[Option<String>; 2]>,
        trailers: Vec<[Option<String>; 2]>,
        body_b64: String,
        body_len: u64,
        body_encodings: &'a [String],
        body_decoded: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        raw_body_b64: Option<String>,
        body_truncated: bool,
        complete: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        version: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        grpc_messages: Vec<GrpcRecord>,
    }

    #[derive(Serialize)]
    struct GrpcRecord {
        compressed: bool,
        decoded: bool,
        data_b64: String,
    }

    /// The same shape as the data records' `conn`.
    #[derive(Serialize)]
    pub(crate) struct ConnRecord<'a> {
        kind: &'static str,
        fd: Option<i32>,
        /// Serialized as `SocketAddr`'s `Display` (serde's human-readable form), as every sink.
        local: Option<SocketAddr>,
        remote: Option<SocketAddr>,
        id: &'a str,
    }

    impl<'a> ConnRecord<'a> {
        pub(crate) fn new(c: &'a ConnInfo) -> Self {
            ConnRecord { kind: c.kind.as_str(), fd: c.fd, local: c.local, remote: c.remote, id: &c.id }
        }
    }

    fn b64(data: &[u8]) -> String {
        base64_simd::STANDARD.encode_to_string(data)
    }

    fn fields(list: &[Header]) -> Vec<[Option<String>; 2]> {
        let text = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
        list.iter().map(|h| [text(&h.name), text(&h.value)]).collect()
    }

    fn message(m: &HttpMessage) -> MessageRecord<'_> {
        MessageRecord {
            headers: fields(&m.headers),
            trailers: fields(&m.trailers),
            body_b64: b64(&m.body),
            body_len: m.body_len,
            body_encodings: &m.encodings,
            body_decoded: m.decoded,
            raw_body_b64: m.raw_body.as_deref().map(b64),
            body_truncated: m.body_truncated,
            complete: m.complete,
            version: m.version.as_deref(),
            reason: m.reason.as_deref(),
            grpc_messages: m
                .grpc_messages
                .iter()
                .map(|g| GrpcRecord { compressed: g.compressed, decoded: g.decoded, data_b64: b64(&g.data) })
                .collect(),
        }
    }

    impl<'a> HttpRecord<'a> {
        pub(crate) fn new(ev: &'a HttpEvent<'a>) -> Self {
            let e = ev.exchange;
            HttpRecord {
                r#type: "http",
                ts_ns: e.start_ns(),
                pid: ev.pid,
                comm: ev.comm,
                proto: e.proto.as_str(),
                program: if e.program_is_client { "client" } else { "server" },
                stream_id: e.stream_id,
                method: e.method.as_deref(),
                scheme: e.scheme.as_deref(),
                authority: e.authority.as_deref(),
                path: e.path.as_deref(),
                status: e.status,
                grpc_status: e.grpc_status(),
                grpc_message: e.grpc_message().map(|m| String::from_utf8_lossy(m).into_owned()),
                request: e.request.as_ref().map(message),
                response: e.response.as_ref().map(message),
                request_ns: e.request_ns,
                response_ns: e.response_ns,
                end_ns: e.end_ns,
                latency_ns: e.request_ns.filter(|_| e.response.is_some()).map(|start| e.end_ns.saturating_sub(start)),
                undecodable_fields: e.has_undecodable_fields(),
                conn: ev.conn.map(ConnRecord::new),
                cgroup: ev.cgroup,
            }
        }
    }

    /// The reference line of `ev`.
    fn serde_line(ev: &HttpEvent<'_>) -> String {
        serde_json::to_string(&HttpRecord::new(ev)).unwrap() + "\n"
    }

    /// A small deterministic generator (SplitMix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }

        /// Bytes of every kind a peer can send: plain text, escapes, controls, UTF-8 of one to
        /// four bytes, C1 controls, and bytes that are not UTF-8 (cut, overlong, surrogates).
        fn bytes(&mut self, max: usize) -> Vec<u8> {
            const PIECES: [&[u8]; 16] = [
                b"a",
                b"Z9-_./:;=, ",
                b"\"",
                b"\\",
                b"\t\r\n",
                b"\x00\x01\x07\x08\x0b\x0c\x1b\x1f",
                b"\x7f",
                "\u{e9}".as_bytes(),
                "\u{65e5}\u{672c}".as_bytes(),
                "\u{1f600}".as_bytes(),
                "\u{85}\u{2028}".as_bytes(),
                b"\xff",
                b"\xc3",
                b"\xe2\x82",
                b"\xed\xa0\x80",
                b"\xc0\xaf\xf4\x90\x80\x80",
            ];
            let mut out = Vec::new();
            for _ in 0..self.below(max + 1) {
                match self.below(3) {
                    0 => out.push(self.below(256) as u8),
                    _ => out.extend_from_slice(PIECES[self.below(PIECES.len())]),
                }
            }
            out
        }
        fn opt_bytes(&mut self) -> Option<Vec<u8>> {
            (!self.chance(15)).then(|| self.bytes(12))
        }
        fn opt_string(&mut self) -> Option<String> {
            self.opt_bytes().map(|b| String::from_utf8_lossy(&b).into_owned())
        }
        fn opt_u64(&mut self) -> Option<u64> {
            (!self.chance(20)).then(|| self.next() >> self.below(64))
        }

        fn fields(&mut self) -> Vec<Header> {
            let mut fields: Vec<Header> =
                (0..self.below(5)).map(|_| Header { name: self.opt_bytes(), value: self.opt_bytes() }).collect();
            if self.chance(20) {
                let status = [&b"0"[..], b"14", b"x", b"4294967296"][self.below(4)];
                fields.push(Header::new("Grpc-Status", status));
                fields.push(Header { name: Some(b"grpc-message".to_vec()), value: self.opt_bytes() });
            }
            fields
        }

        fn message(&mut self) -> HttpMessage {
            let body = self.bytes(40);
            HttpMessage {
                headers: self.fields(),
                trailers: if self.chance(30) { self.fields() } else { Vec::new() },
                body_len: if self.chance(80) { body.len() as u64 } else { self.next() },
                body,
                raw_body: self.chance(20).then(|| self.bytes(30)),
                encodings: (0..self.below(3)).filter_map(|_| self.opt_string()).collect(),
                decoded: self.chance(30),
                body_truncated: self.chance(20),
                grpc_messages: (0..self.below(3))
                    .map(|_| GrpcMessage {
                        compressed: self.chance(50),
                        data: self.bytes(20),
                        decoded: self.chance(50),
                    })
                    .collect(),
                complete: self.chance(70),
                version: self.opt_string(),
                reason: self.opt_string(),
            }
        }

        fn exchange(&mut self) -> HttpExchange {
            HttpExchange {
                proto: [HttpProto::Http1, HttpProto::H2, HttpProto::Grpc][self.below(3)],
                stream_id: self.chance(50).then(|| self.next() as u32),
                method: self.opt_string(),
                scheme: self.opt_string(),
                authority: self.opt_string(),
                path: self.opt_string(),
                status: self.chance(80).then(|| self.next() as u16),
                request: self.chance(85).then(|| self.message()),
                response: self.chance(85).then(|| self.message()),
                request_ns: self.opt_u64(),
                response_ns: self.opt_u64(),
                end_ns: self.next() >> self.below(64),
                program_is_client: self.chance(50),
            }
        }

        fn conn(&mut self) -> Option<ConnInfo> {
            let addr = |r: &mut Rng| -> Option<SocketAddr> {
                match r.below(4) {
                    0 => None,
                    1 => Some(SocketAddr::new(std::net::Ipv6Addr::from(r.next() as u128).into(), r.next() as u16)),
                    _ => Some(SocketAddr::new(std::net::Ipv4Addr::from(r.next() as u32).into(), r.next() as u16)),
                }
            };
            (!self.chance(20)).then(|| ConnInfo {
                kind: [ConnKind::Tcp, ConnKind::Unix, ConnKind::Unknown][self.below(3)],
                fd: self.chance(70).then(|| self.next() as i32),
                local: addr(self),
                remote: addr(self),
                id: String::from_utf8_lossy(&self.bytes(16)).into_owned(),
            })
        }
    }

    /// Many generated exchanges, every field of every kind: the hand-written record is the
    /// serde record, byte for byte, and it parses back to the same JSON value.
    #[test]
    fn records_match_serde() {
        let mut rng = Rng(16);
        let mut sink = JsonlSink::new(Vec::new());
        let mut want = String::new();
        for _ in 0..5000 {
            let exchange = rng.exchange();
            let conn = rng.conn();
            let comm = String::from_utf8_lossy(&rng.bytes(15)).into_owned();
            let cgroup = rng.opt_string();
            let event = HttpEvent {
                pid: rng.next() as u32,
                comm: &comm,
                conn: conn.as_ref(),
                cgroup: cgroup.as_deref(),
                exchange: &exchange,
            };
            sink.write_event(&Event::Http(event.clone())).unwrap();
            want += &serde_line(&event);
        }
        let got = String::from_utf8(sink.into_inner()).unwrap();
        for (got, want) in got.lines().zip(want.lines()) {
            assert_eq!(got, want);
            let parsed: serde_json::Value = serde_json::from_str(got).unwrap();
            assert_eq!(parsed, serde_json::from_str::<serde_json::Value>(want).unwrap());
        }
        assert_eq!(got, want);
    }

    /// The edge cases by name: nothing decoded, empty bodies, an unfinished exchange.
    #[test]
    fn sparse_and_unfinished_records_match_serde() {
        let bare = HttpExchange {
            proto: HttpProto::H2,
            stream_id: Some(1),
            method: None,
            scheme: None,
            authority: None,
            path: None,
            status: None,
            request: Some(HttpMessage {
                headers: vec![Header { name: None, value: None }, Header::new("x", b"\xff\xfe".to_vec())],
                ..HttpMessage::default()
            }),
            response: None,
            request_ns: Some(5),
            response_ns: None,
            end_ns: 3,
            program_is_client: false,
        };
        let unanswered = HttpExchange { request: None, response: Some(HttpMessage::default()), ..bare.clone() };
        for exchange in [&bare, &unanswered] {
            let event = HttpEvent { pid: 0, comm: "", conn: None, cgroup: Some(""), exchange };
            let mut line = Vec::new();
            push_record(&mut line, &event);
            assert_eq!(String::from_utf8(line).unwrap(), serde_line(&event));
        }
    }

    /// The record, whole: the contract the README documents.
    #[test]
    fn http_record_is_the_documented_shape() {
        let exchange = HttpExchange {
            proto: HttpProto::Http1,
            stream_id: None,
            method: Some("GET".into()),
            scheme: Some("https".into()),
            authority: Some("h".into()),
            path: Some("/x".into()),
            status: Some(200),
            request: Some(HttpMessage {
                headers: vec![Header::new("Host", "h"), Header { name: None, value: Some(b"v".to_vec()) }],
                complete: true,
                version: Some("HTTP/1.1".into()),
                ..HttpMessage::default()
            }),
            response: Some(HttpMessage {
                body: b"ok".to_vec(),
                raw_body: Some(b"OK".to_vec()),
                encodings: vec!["gzip".into()],
                decoded: true,
                body_len: 2,
                complete: true,
                version: Some("HTTP/1.1".into()),
                reason: Some("OK".into()),
                ..HttpMessage::default()
            }),
            request_ns: Some(10),
            response_ns: Some(15),
            end_ns: 20,
            program_is_client: true,
        };
        let conn = ConnInfo {
            kind: ConnKind::Tcp,
            fd: Some(3),
            local: Some("10.0.0.1:1".parse().unwrap()),
            remote: Some("[::1]:2".parse().unwrap()),
            id: "c".into(),
        };
        let event = HttpEvent { pid: 1, comm: "x", conn: Some(&conn), cgroup: None, exchange: &exchange };
        let mut sink = JsonlSink::new(Vec::new());
        sink.write_event(&Event::Http(event)).unwrap();
        let want = concat!(
            r#"{"type":"http","ts_ns":10,"pid":1,"comm":"x","proto":"http/1.1","program":"client","stream_id":null,"#,
            r#""method":"GET","scheme":"https","authority":"h","path":"/x","status":200,"#,
            r#""request":{"headers":[["Host","h"],[null,"v"]],"trailers":[],"body_b64":"","body_len":0,"body_encodings":[],"#,
            r#""body_decoded":false,"body_truncated":false,"complete":true,"version":"HTTP/1.1"},"#,
            r#""response":{"headers":[],"trailers":[],"body_b64":"b2s=","body_len":2,"body_encodings":["gzip"],"#,
            r#""body_decoded":true,"raw_body_b64":"T0s=","body_truncated":false,"complete":true,"version":"HTTP/1.1","reason":"OK"},"#,
            r#""request_ns":10,"response_ns":15,"end_ns":20,"latency_ns":10,"undecodable_fields":true,"#,
            r#""conn":{"kind":"tcp","fd":3,"local":"10.0.0.1:1","remote":"[::1]:2","id":"c"}}"#,
            "\n"
        );
        assert_eq!(String::from_utf8(sink.into_inner()).unwrap(), want);
    }
}

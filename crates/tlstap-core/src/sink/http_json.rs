//! The `{"type":"http",...}` JSON Lines record (schema in the README). Field names and meanings
//! must not change; new fields may be added. Header names and values are JSON strings (bytes
//! that are not UTF-8 become U+FFFD); a field tlstap could not decode is `null`.

use std::net::SocketAddr;

use serde::Serialize;

use crate::event::{ConnInfo, HttpEvent};
use crate::http::{Header, HttpMessage};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ConnKind, Event};
    use crate::http::{HttpExchange, HttpProto};
    use crate::sink::{JsonlSink, Sink};

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

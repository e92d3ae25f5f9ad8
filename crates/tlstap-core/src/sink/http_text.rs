//! Text rendering of a decoded HTTP exchange: a header line, then the request (`>` lines) and
//! the response (`<` lines) as a person reads them, bodies as text when printable, else as a
//! hex dump. Names and values chosen by the peers are escaped, so they cannot forge lines or
//! send terminal escapes.

use super::ascii::is_printable_ascii;
use super::hexdump::push_hexdump;
use super::text::{is_printable, PayloadStyle};
use super::{push_addr, push_decimal, Rfc3339Cache};
use crate::event::HttpEvent;
use crate::http::{Header, HttpExchange, HttpMessage, HttpProto};

/// Appends the whole exchange, ending with a blank line.
pub(crate) fn push_exchange(out: &mut Vec<u8>, ev: &HttpEvent<'_>, style: PayloadStyle, clock: &mut Rfc3339Cache) {
    let e = ev.exchange;
    clock.push(out, e.start_ns());
    out.extend_from_slice(b" pid=");
    push_decimal(out, ev.pid);
    out.extend_from_slice(b" comm=");
    out.extend_from_slice(ev.comm.as_bytes());
    out.push(b' ');
    out.extend_from_slice(e.proto.as_str().as_bytes());
    if let Some(id) = e.stream_id {
        out.extend_from_slice(b" stream=");
        push_decimal(out, id);
    }
    out.extend_from_slice(if e.program_is_client { b" (client)" } else { b" (server)" });
    if let Some(conn) = ev.conn {
        out.push(b' ');
        push_addr(out, conn.local.as_ref());
        out.extend_from_slice(b" -> ");
        push_addr(out, conn.remote.as_ref());
    }
    if let (Some(start), true) = (e.request_ns, e.response.is_some()) {
        out.extend_from_slice(b" latency=");
        push_millis(out, e.end_ns.saturating_sub(start));
    }
    if e.has_undecodable_fields() {
        out.extend_from_slice(b" UNDECODABLE-FIELDS");
    }
    out.push(b'\n');
    match &e.request {
        Some(request) => {
            push_request_line(out, e, request);
            push_message(out, b"> ", request, e.proto, style);
        }
        None => out.extend_from_slice(b"> [request not captured]\n"),
    }
    match &e.response {
        Some(response) => {
            push_status_line(out, e, response);
            push_message(out, b"< ", response, e.proto, style);
        }
        None => out.extend_from_slice(b"< [no response captured]\n"),
    }
    if let Some(status) = e.grpc_status() {
        out.extend_from_slice(b"< [grpc-status ");
        push_decimal(out, status);
        if let Some(message) = e.grpc_message().filter(|m| !m.is_empty()) {
            out.extend_from_slice(b": ");
            push_escaped(out, message);
        }
        out.extend_from_slice(b"]\n");
    }
    out.push(b'\n');
}

fn push_request_line(out: &mut Vec<u8>, e: &HttpExchange, request: &HttpMessage) {
    out.extend_from_slice(b"> ");
    push_escaped(out, e.method.as_deref().unwrap_or("?").as_bytes());
    out.push(b' ');
    if e.proto != HttpProto::Http1 {
        push_escaped(out, e.scheme.as_deref().unwrap_or("?").as_bytes());
        out.extend_from_slice(b"://");
        push_escaped(out, e.authority.as_deref().unwrap_or("?").as_bytes());
    }
    push_escaped(out, e.path.as_deref().unwrap_or("?").as_bytes());
    if let Some(version) = &request.version {
        out.push(b' ');
        push_escaped(out, version.as_bytes());
    }
    out.push(b'\n');
}

fn push_status_line(out: &mut Vec<u8>, e: &HttpExchange, response: &HttpMessage) {
    out.extend_from_slice(b"< ");
    if let Some(version) = &response.version {
        push_escaped(out, version.as_bytes());
        out.push(b' ');
    }
    match e.status {
        Some(status) => push_decimal(out, status),
        None => out.push(b'?'),
    }
    if let Some(reason) = response.reason.as_deref().filter(|r| !r.is_empty()) {
        out.push(b' ');
        push_escaped(out, reason.as_bytes());
    }
    out.push(b'\n');
}

fn push_message(out: &mut Vec<u8>, mark: &[u8], m: &HttpMessage, proto: HttpProto, style: PayloadStyle) {
    push_fields(out, mark, &m.headers);
    if m.body_len > 0 || m.body_truncated {
        out.extend_from_slice(mark);
        out.extend_from_slice(b"[body ");
        push_decimal(out, m.body_len);
        out.extend_from_slice(b" bytes");
        if m.decoded {
            out.extend_from_slice(b", ");
            out.extend_from_slice(m.encodings.join("+").as_bytes());
            out.extend_from_slice(b"-decoded to ");
            push_decimal(out, m.body.len());
        } else if !m.encodings.is_empty() {
            out.extend_from_slice(b", ");
            push_escaped(out, m.encodings.join("+").as_bytes());
            out.extend_from_slice(b" not decoded");
        }
        if m.body_truncated {
            out.extend_from_slice(b", TRUNCATED");
        }
        out.extend_from_slice(b"]\n");
        if proto == HttpProto::Grpc && !m.grpc_messages.is_empty() {
            for (i, message) in m.grpc_messages.iter().enumerate() {
                out.extend_from_slice(mark);
                out.extend_from_slice(b"[grpc message ");
                push_decimal(out, i + 1);
                out.extend_from_slice(b": ");
                push_decimal(out, message.data.len());
                out.extend_from_slice(b" bytes");
                if message.compressed {
                    out.extend_from_slice(if message.decoded { b", decompressed" } else { b", compressed" });
                }
                out.extend_from_slice(b"]\n");
                push_payload(out, &message.data, style);
            }
        } else {
            push_payload(out, &m.body, style);
        }
    }
    if !m.trailers.is_empty() {
        out.extend_from_slice(mark);
        out.extend_from_slice(b"[trailers]\n");
        push_fields(out, mark, &m.trailers);
    }
    if !m.complete {
        out.extend_from_slice(mark);
        out.extend_from_slice(b"[incomplete]\n");
    }
}

fn push_fields(out: &mut Vec<u8>, mark: &[u8], fields: &[Header]) {
    for field in fields {
        out.extend_from_slice(mark);
        match &field.name {
            Some(name) => push_escaped(out, name),
            None => out.extend_from_slice(b"<undecodable>"),
        }
        out.extend_from_slice(b": ");
        match &field.value {
            Some(value) => push_escaped(out, value),
            None => out.extend_from_slice(b"<undecodable>"),
        }
        out.push(b'\n');
    }
}

fn push_payload(out: &mut Vec<u8>, data: &[u8], style: PayloadStyle) {
    if style == PayloadStyle::Auto && is_printable(data) {
        out.extend_from_slice(data);
        if !data.ends_with(b"\n") {
            out.push(b'\n');
        }
    } else {
        push_hexdump(out, data);
    }
}

/// `12.345ms`.
fn push_millis(out: &mut Vec<u8>, ns: u64) {
    push_decimal(out, ns / 1_000_000);
    out.push(b'.');
    let micros = (ns % 1_000_000) / 1_000;
    let digits = itoa::Buffer::new().format(micros).len();
    out.extend(std::iter::repeat_n(b'0', 3 - digits));
    push_decimal(out, micros);
    out.extend_from_slice(b"ms");
}

/// Printable UTF-8 as it is; anything else (control bytes, escapes, invalid UTF-8) escaped
/// byte by byte as `\xNN`, `\n`, ... (`u8::escape_ascii`).
///
/// Printable ASCII (nearly every name and value) is recognised a word at a time and copied whole;
/// text with other bytes goes through the UTF-8 check, and an escaped one is copied in runs
/// between the bytes that change: byte by byte through `escape_ascii` and its UTF-8 decoding
/// per char, this was a tenth of the HTTP text view's time (bench: httpview_cost).
pub(crate) fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    if is_printable_ascii(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => out.extend_from_slice(bytes),
        _ => push_escaped_ascii(out, bytes),
    }
}

/// `bytes.escape_ascii()`, appended in runs of the bytes it keeps.
fn push_escaped_ascii(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'\t' => b't',
            b'\r' => b'r',
            b'\n' => b'n',
            b'\\' | b'\'' | b'"' => b,
            0x20..=0x7e => continue,
            _ => 0,
        };
        out.extend_from_slice(&bytes[run..i]);
        run = i + 1;
        match short {
            0 => out.extend_from_slice(&[b'\\', b'x', DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]),
            c => out.extend_from_slice(&[b'\\', c]),
        }
    }
    out.extend_from_slice(&bytes[run..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ConnInfo, ConnKind};

    fn exchange() -> HttpExchange {
        HttpExchange {
            proto: HttpProto::H2,
            stream_id: Some(3),
            method: Some("POST".into()),
            scheme: Some("https".into()),
            authority: Some("example.test".into()),
            path: Some("/up".into()),
            status: Some(200),
            request: Some(HttpMessage {
                headers: vec![
                    Header::new(":method", "POST"),
                    Header { name: None, value: None },
                    Header::new("x-evil", "a\x1b[2Jb\nfake"),
                ],
                body: b"hi".to_vec(),
                body_len: 2,
                complete: true,
                ..HttpMessage::default()
            }),
            response: Some(HttpMessage {
                headers: vec![Header::new(":status", "200")],
                body: vec![0, 1, 2],
                raw_body: Some(vec![9; 20]),
                encodings: vec!["gzip".into()],
                decoded: true,
                body_len: 20,
                trailers: vec![Header::new("x-t", "1")],
                complete: false,
                ..HttpMessage::default()
            }),
            request_ns: Some(1_000_000_000),
            response_ns: Some(1_001_000_000),
            end_ns: 1_002_345_678,
            program_is_client: true,
        }
    }

    /// The definition `push_escaped` must keep: printable UTF-8 as it is, else `escape_ascii`.
    fn escaped_reference(bytes: &[u8]) -> Vec<u8> {
        match std::str::from_utf8(bytes) {
            Ok(text) if !text.chars().any(char::is_control) => bytes.to_vec(),
            _ => bytes.escape_ascii().collect(),
        }
    }

    #[test]
    fn escaping_matches_its_definition() {
        let mut cases: Vec<Vec<u8>> = [
            &b""[..],
            b"plain value 1.0",
            b"quote \" and 'single' and back\\slash",
            b"tab\there",
            b"a\x1b[2Jb\nfake\r\n",
            b"\x00\x01\x07\x08\x0b\x0c\x1f\x7f",
            "caf\u{e9} \u{65e5}\u{672c} \"q\"".as_bytes(),
            "C1 control \u{85} and \u{9f}".as_bytes(),
            "line sep \u{2028} zero width \u{200b}".as_bytes(),
            b"invalid \xff\xfe, cut \xc3, surrogate \xed\xa0\x80, overlong \xc0\xaf",
            b"\"\\'",
        ]
        .iter()
        .map(|c| c.to_vec())
        .collect();
        cases.push((0..=255).collect());
        // Every pair of bytes: each escape next to each kept byte, every cut sequence.
        for a in 0..=255u8 {
            for b in [0u8, b'a', b'"', b'\\', 0x7f, 0x80, 0xa9, 0xc3, 0xff] {
                cases.push(vec![a, b]);
                cases.push(vec![b'x', a, b, b'y']);
            }
        }
        for case in &cases {
            let mut out = b"prefix ".to_vec();
            push_escaped(&mut out, case);
            let mut want = b"prefix ".to_vec();
            want.extend(escaped_reference(case));
            assert_eq!(out, want, "{case:?}");
        }
    }

    /// The whole rendering, fixed: a golden text.
    #[test]
    fn exchange_renders_readably_and_safely() {
        let conn = ConnInfo {
            kind: ConnKind::Tcp,
            fd: Some(3),
            local: Some("127.0.0.1:5000".parse().unwrap()),
            remote: Some("127.0.0.1:443".parse().unwrap()),
            id: "x".into(),
        };
        let e = exchange();
        let ev = HttpEvent { pid: 7, comm: "cli\\x07", conn: Some(&conn), cgroup: None, exchange: &e };
        let mut out = Vec::new();
        push_exchange(&mut out, &ev, PayloadStyle::Auto, &mut Rfc3339Cache::default());
        let want = "1970-01-01T00:00:01.000000000Z pid=7 comm=cli\\x07 h2 stream=3 (client) 127.0.0.1:5000 -> 127.0.0.1:443 latency=2.345ms UNDECODABLE-FIELDS\n\
> POST https://example.test/up\n\
> :method: POST\n\
> <undecodable>: <undecodable>\n\
> x-evil: a\\x1b[2Jb\\nfake\n\
> [body 2 bytes]\n\
hi\n\
< 200\n\
< :status: 200\n\
< [body 20 bytes, gzip-decoded to 3]\n\
00000000  00 01 02                                          |...|\n\
< [trailers]\n\
< x-t: 1\n\
< [incomplete]\n\
\n";
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}

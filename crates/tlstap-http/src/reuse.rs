//! Exchanges already shown, kept for the next ones. A small HTTP/1 exchange is some twenty
//! strings and vectors (each header's name and value, the start line's parts, the body) in a
//! 568-byte struct; allocating and freeing them, and moving the struct and its messages
//! between the parser, the queue of requests and the caller, were over a quarter of the HTTP
//! view's decoding time (bench: httpview_cost). The HTTP/1 decoder builds each exchange in a
//! box taken from here, writing into the buffers it kept, and the caller gives the box back
//! once the exchange is shown ([`Spare::recycle`]).
//!
//! What must stay true: a kept exchange's fields mean nothing; whoever takes one sets every
//! field ([`fill_message`], `h1::H1Conn::exchange`). What is kept is bounded.

use tlstap_core::http::{Header, HttpExchange, HttpMessage, HttpProto};

/// Exchanges kept at most.
const MAX_EXCHANGES: usize = 64;
/// A kept body, or the names and values of a kept message's fields, hold at most this much
/// (larger ones are freed).
const MAX_KEPT_BYTES: usize = 16 << 10;
/// A kept message keeps at most this many header fields.
const MAX_KEPT_FIELDS: usize = 64;

#[derive(Debug, Default)]
pub struct Spare {
    // Boxed: an exchange goes from here to a parser, the queue of requests and the caller as a
    // pointer, not as 568 bytes.
    #[allow(clippy::vec_box)]
    exchanges: Vec<Box<HttpExchange>>,
}

impl Spare {
    /// A box to build an exchange in: its fields mean nothing until set.
    pub fn exchange(&mut self) -> Box<HttpExchange> {
        self.exchanges.pop().unwrap_or_else(|| {
            Box::new(HttpExchange {
                proto: HttpProto::Http1,
                stream_id: None,
                method: None,
                scheme: None,
                authority: None,
                path: None,
                status: None,
                request: None,
                response: None,
                request_ns: None,
                response_ns: None,
                end_ns: 0,
                program_is_client: false,
            })
        })
    }

    /// Keeps an exchange that was shown, within the bounds.
    pub fn recycle(&mut self, mut exchange: Box<HttpExchange>) {
        if self.exchanges.len() >= MAX_EXCHANGES {
            return;
        }
        for message in [&mut exchange.request, &mut exchange.response].into_iter().flatten() {
            let held: usize = message.headers.iter().map(|h| part_capacity(&h.name) + part_capacity(&h.value)).sum();
            if held > MAX_KEPT_BYTES {
                message.headers = Vec::new();
            }
            message.headers.truncate(MAX_KEPT_FIELDS);
            if message.body.capacity() > MAX_KEPT_BYTES {
                message.body = Vec::new();
            }
            // Rare, and of any size: not kept.
            message.trailers = Vec::new();
            message.raw_body = None;
            message.grpc_messages = Vec::new();
        }
        self.exchanges.push(exchange);
    }
}

fn part_capacity(part: &Option<Vec<u8>>) -> usize {
    part.as_ref().map_or(0, Vec::capacity)
}

/// Makes `slot` a message of the header fields `(name, value)` of `fields`, in order, the
/// start line's `version` and `reason`, and nothing else (no body, not complete), writing
/// into the buffers it has.
pub fn fill_message<'a, 'm>(
    slot: &'m mut Option<HttpMessage>,
    fields: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
    version: Option<u8>,
    reason: Option<&str>,
) -> &'m mut HttpMessage {
    let m = slot.get_or_insert_with(HttpMessage::default);
    fill_fields(&mut m.headers, fields);
    m.trailers.clear();
    m.body.clear();
    m.raw_body = None;
    m.encodings.clear();
    m.decoded = false;
    m.body_len = 0;
    m.body_truncated = false;
    m.grpc_messages.clear();
    m.complete = false;
    match version {
        Some(v) => {
            let text = m.version.get_or_insert_with(String::new);
            text.clear();
            text.push_str("HTTP/1.");
            // httparse reads one digit; any other would be written as format! writes it.
            match v {
                0..=9 => text.push(char::from(b'0' + v)),
                _ => text.push_str(&v.to_string()),
            }
        }
        None => m.version = None,
    }
    set_text(&mut m.reason, reason);
    m
}

/// Makes `fields` the header fields `(name, value)` of `parsed`, in order, writing into the
/// buffers `fields` already has.
fn fill_fields<'a>(fields: &mut Vec<Header>, parsed: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>) {
    let n = parsed.len();
    for (i, (name, value)) in parsed.enumerate() {
        match fields.get_mut(i) {
            Some(field) => {
                set_bytes(&mut field.name, name);
                set_bytes(&mut field.value, value);
            }
            None => fields.push(Header::new(name, value)),
        }
    }
    fields.truncate(n);
}

fn set_bytes(part: &mut Option<Vec<u8>>, bytes: &[u8]) {
    match part {
        Some(buf) => {
            buf.clear();
            buf.extend_from_slice(bytes);
        }
        None => *part = Some(bytes.to_vec()),
    }
}

/// Makes `slot` hold `text`, in the string it has.
pub fn set_text(slot: &mut Option<String>, text: Option<&str>) {
    match (slot.as_mut(), text) {
        (Some(s), Some(text)) => {
            s.clear();
            s.push_str(text);
        }
        (None, Some(text)) => *slot = Some(text.to_string()),
        (_, None) => *slot = None,
    }
}

/// Makes `slot` hold `String::from_utf8_lossy(bytes)`, in the string it has.
pub fn set_lossy(slot: &mut Option<String>, bytes: Option<&[u8]>) {
    let Some(bytes) = bytes else {
        *slot = None;
        return;
    };
    let s = slot.get_or_insert_with(String::new);
    s.clear();
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            s.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

#[cfg(test)]
mod tests {
    use tlstap_core::http::GrpcMessage;

    use super::*;

    fn used_message() -> HttpMessage {
        HttpMessage {
            headers: vec![Header::new("a", "1"), Header { name: None, value: None }, Header::new("c", "3")],
            trailers: vec![Header::new("t", "v")],
            body: b"body".to_vec(),
            raw_body: Some(b"raw".to_vec()),
            encodings: vec!["gzip".into()],
            decoded: true,
            body_len: 9,
            body_truncated: true,
            grpc_messages: vec![GrpcMessage { compressed: true, data: vec![1], decoded: true }],
            complete: true,
            version: Some("HTTP/1.1".into()),
            reason: Some("OK".into()),
        }
    }

    /// A filled message holds nothing of what its slot held, however many fields it has.
    #[test]
    fn filled_messages_hold_nothing_of_before() {
        for n in 0..5 {
            for version in [None, Some(0), Some(1), Some(12)] {
                let mut slot = Some(used_message());
                let fields: Vec<(Vec<u8>, Vec<u8>)> =
                    (0..n).map(|i| (format!("n{i}").into_bytes(), format!("value {i}").into_bytes())).collect();
                let m = fill_message(&mut slot, fields.iter().map(|(a, b)| (&a[..], &b[..])), version, None);
                let want = HttpMessage {
                    headers: fields.iter().map(|(a, b)| Header::new(a.clone(), b.clone())).collect(),
                    version: version.map(|v| format!("HTTP/1.{v}")),
                    ..HttpMessage::default()
                };
                assert_eq!(*m, want, "{n} fields");
                let mut empty = None;
                let m = fill_message(&mut empty, std::iter::empty(), None, Some("Not Found"));
                assert_eq!(m.reason.as_deref(), Some("Not Found"));
            }
        }
    }

    #[test]
    fn texts_are_set_in_place() {
        let mut slot = Some("old text".to_string());
        set_text(&mut slot, Some("GET"));
        assert_eq!(slot.as_deref(), Some("GET"));
        set_lossy(&mut slot, Some(b"a\xffb\xc3"));
        assert_eq!(slot.as_deref(), Some(&*String::from_utf8_lossy(b"a\xffb\xc3")));
        set_lossy(&mut slot, Some(b""));
        assert_eq!(slot.as_deref(), Some(""));
        set_text(&mut slot, None);
        assert_eq!(slot, None);
        set_lossy(&mut slot, Some(b"h"));
        assert_eq!(slot.as_deref(), Some("h"));
        set_lossy(&mut slot, None);
        assert_eq!(slot, None);
    }

    /// What is kept is bounded: in number, and large buffers are let go.
    #[test]
    fn what_is_kept_is_bounded() {
        let mut spare = Spare::default();
        let big = HttpMessage {
            body: vec![0; MAX_KEPT_BYTES + 1],
            headers: vec![Header::new("x", vec![b'v'; MAX_KEPT_BYTES + 1])],
            ..used_message()
        };
        for _ in 0..MAX_EXCHANGES + 10 {
            let mut e = Spare::default().exchange();
            e.request = Some(big.clone());
            e.response = Some(used_message());
            spare.recycle(e);
        }
        assert_eq!(spare.exchanges.len(), MAX_EXCHANGES);
        for e in &spare.exchanges {
            for m in [&e.request, &e.response].into_iter().flatten() {
                assert!(m.body.capacity() <= MAX_KEPT_BYTES && m.trailers.is_empty() && m.raw_body.is_none());
                assert!(m.headers.iter().all(|h| part_capacity(&h.value) <= MAX_KEPT_BYTES));
            }
        }
    }
}

//! HTTP/1.x: heads parsed by `httparse`, bodies framed by Content-Length, chunked transfer
//! coding or the connection's end (RFC 9112 §6.3), requests and responses paired in order
//! (keep-alive and pipelining), interim 1xx responses skipped, and an upgrade (101, CONNECT)
//! ending the decoding of the connection.
//!
//! Each message is built in the exchange box it goes out in, taken from those already shown
//! ([`Spare`]), and heads are parsed into an uninitialised field array: zeroing 256 fields for
//! each head, allocating each field's name and value, and moving messages from the parser to
//! the queue to the exchange were most of the HTTP view's decoding time (bench: httpview_cost).

use std::collections::VecDeque;
use std::mem::MaybeUninit;

use tlstap_core::http::{Header, HttpExchange, HttpMessage, HttpProto};

use crate::body::{self, BodyBuffer};
use crate::reuse::{fill_message, set_lossy, set_text, Spare};
use crate::Limits;

/// More headers than this in one head is not a head tlstap decodes.
const MAX_HEADERS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    /// Chunked: expecting a chunk-size line.
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    UntilClose,
}

/// A message whose head has been parsed, in the exchange box it was parsed into: a request is
/// its `request` (and its `method` and `path`), a response its `response`.
#[derive(Debug)]
struct Building {
    exchange: Box<HttpExchange>,
    body: BodyBuffer,
    framing: Framing,
    start_ns: u64,
    status: Option<u16>,
}

/// A finished (or, at the end, unfinished) message with what pairing needs.
#[derive(Debug)]
struct Parsed {
    exchange: Box<HttpExchange>,
    start_ns: u64,
    end_ns: u64,
    status: Option<u16>,
}

impl Parsed {
    fn method(&self) -> Option<&str> {
        self.exchange.method.as_deref()
    }
}

/// The message of `kind` in `exchange`.
fn slot(exchange: &mut HttpExchange, kind: Kind) -> &mut Option<HttpMessage> {
    match kind {
        Kind::Request => &mut exchange.request,
        Kind::Response => &mut exchange.response,
    }
}

/// The framing of the connection was lost (a head httparse refuses, a bad chunk size): the
/// caller stops decoding it until a call starts with a start line again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desync;

#[derive(Debug)]
struct Parser {
    kind: Kind,
    /// Bytes received; those before `start` are consumed.
    buf: Vec<u8>,
    start: usize,
    /// Time of the call that brought the first unconsumed byte.
    buf_ns: u64,
    current: Option<Building>,
}

impl Parser {
    fn new(kind: Kind) -> Parser {
        Parser { kind, buf: Vec::new(), start: 0, buf_ns: 0, current: None }
    }

    fn push(&mut self, data: &[u8], ts_ns: u64) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.buf_ns = ts_ns;
        } else if self.start >= self.buf.len() - self.start {
            // Consumed bytes are dropped once they are as many as those left: each byte is
            // moved at most once on average, and the buffer stays within twice what is left.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Parses as far as the buffer goes; `request_method` is the method of the request the next
    /// response answers (a response to HEAD has no body). `Some` is a message finished.
    fn step(
        &mut self,
        request_method: Option<&str>,
        now_ns: u64,
        limits: &Limits,
        spare: &mut Spare,
    ) -> Result<Option<Parsed>, Desync> {
        loop {
            let Some(building) = self.current.as_mut() else {
                if self.start == self.buf.len() {
                    return Ok(None);
                }
                match self.parse_head(request_method, limits, spare)? {
                    true => continue,
                    false => return Ok(None),
                }
            };
            let data = &self.buf[self.start..];
            let consumed = match building.framing {
                Framing::Length(0) => return Ok(self.finish(now_ns, limits)),
                Framing::Length(left) => {
                    let n = (left.min(data.len() as u64)) as usize;
                    building.body.push(&data[..n], limits.max_body);
                    building.framing = Framing::Length(left - n as u64);
                    n
                }
                Framing::UntilClose => {
                    building.body.push(data, limits.max_body);
                    data.len()
                }
                Framing::ChunkSize => match httparse::parse_chunk_size(data) {
                    Ok(httparse::Status::Complete((n, 0))) => {
                        building.framing = Framing::Trailers;
                        n
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        building.framing = Framing::ChunkData(size);
                        n
                    }
                    Ok(httparse::Status::Partial) if data.len() < 1024 => 0,
                    _ => return Err(Desync),
                },
                Framing::ChunkData(left) => {
                    let n = (left.min(data.len() as u64)) as usize;
                    building.body.push(&data[..n], limits.max_body);
                    building.framing =
                        if left == n as u64 { Framing::ChunkEnd } else { Framing::ChunkData(left - n as u64) };
                    n
                }
                Framing::ChunkEnd => match data.get(..2) {
                    Some(b"\r\n") => {
                        building.framing = Framing::ChunkSize;
                        2
                    }
                    Some(_) => return Err(Desync),
                    None => 0,
                },
                Framing::Trailers => {
                    // No trailers (nearly always): what httparse says of an empty block, without
                    // setting out its field array.
                    let parsed = match data.starts_with(b"\r\n") {
                        true => Ok(httparse::Status::Complete(2)),
                        false => {
                            let message =
                                slot(&mut building.exchange, self.kind).get_or_insert_with(HttpMessage::default);
                            parse_trailers(data, &mut message.trailers)
                        }
                    };
                    match parsed {
                        Ok(httparse::Status::Complete(n)) => {
                            self.consume(n, now_ns);
                            return Ok(self.finish(now_ns, limits));
                        }
                        Ok(httparse::Status::Partial) if data.len() <= limits.max_head => 0,
                        _ => return Err(Desync),
                    }
                }
            };
            if consumed == 0 {
                return Ok(None);
            }
            self.consume(consumed, now_ns);
        }
    }

    fn consume(&mut self, n: usize, now_ns: u64) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf_ns = now_ns;
    }

    /// Parses a head from the buffer into `current`; false when it is not complete yet.
    fn parse_head(&mut self, request_method: Option<&str>, limits: &Limits, spare: &mut Spare) -> Result<bool, Desync> {
        let data = &self.buf[self.start..];
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let (n, building) = match self.kind {
            Kind::Request => {
                let mut req = httparse::Request::new(&mut []);
                match req.parse_with_uninit_headers(data, &mut fields) {
                    Ok(httparse::Status::Complete(n)) => (n, request_head(&req, self.buf_ns, spare)),
                    Ok(httparse::Status::Partial) if data.len() <= limits.max_head => return Ok(false),
                    _ => return Err(Desync),
                }
            }
            Kind::Response => {
                let mut resp = httparse::Response::new(&mut []);
                match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, data, &mut fields)
                {
                    Ok(httparse::Status::Complete(n)) => (n, response_head(&resp, request_method, self.buf_ns, spare)),
                    Ok(httparse::Status::Partial) if data.len() <= limits.max_head => return Ok(false),
                    _ => return Err(Desync),
                }
            }
        };
        self.current = Some(building);
        let ts = self.buf_ns;
        self.consume(n, ts);
        Ok(true)
    }

    /// The message being built is complete.
    fn finish(&mut self, now_ns: u64, limits: &Limits) -> Option<Parsed> {
        let kind = self.kind;
        Some(finished(self.current.take()?, kind, true, now_ns, limits))
    }

    /// The message in progress, as it is (the capture is ending, or its response came first).
    fn take_unfinished(&mut self, now_ns: u64, limits: &Limits) -> Option<Parsed> {
        // Even a body framed by the connection's end is not known to be whole: tlstap does not
        // see connections close.
        let kind = self.kind;
        Some(finished(self.current.take()?, kind, false, now_ns, limits))
    }
}

/// Parses a trailer block into `trailers`: as httparse's `parse_headers` says, with its count.
fn parse_trailers(data: &[u8], trailers: &mut Vec<Header>) -> httparse::Result<usize> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    Ok(match httparse::parse_headers(data, &mut fields)? {
        httparse::Status::Complete((n, fields)) => {
            *trailers = fields.iter().map(|f| Header::new(f.name, f.value)).collect();
            httparse::Status::Complete(n)
        }
        httparse::Status::Partial => httparse::Status::Partial,
    })
}

fn request_head(req: &httparse::Request<'_, '_>, start_ns: u64, spare: &mut Spare) -> Building {
    let mut exchange = spare.exchange();
    let fields = req.headers.iter().map(|f| (f.name.as_bytes(), f.value));
    let message = fill_message(&mut exchange.request, fields, req.version, None);
    let framing = body_framing(message).unwrap_or(Framing::Length(0));
    let body = take_body(message);
    set_text(&mut exchange.method, req.method);
    set_text(&mut exchange.path, req.path);
    Building { exchange, body, framing, start_ns, status: None }
}

fn response_head(
    resp: &httparse::Response<'_, '_>,
    request_method: Option<&str>,
    start_ns: u64,
    spare: &mut Spare,
) -> Building {
    let mut exchange = spare.exchange();
    let fields = resp.headers.iter().map(|f| (f.name.as_bytes(), f.value));
    let message = fill_message(&mut exchange.response, fields, resp.version, resp.reason);
    let status = resp.code.unwrap_or(0);
    // RFC 9112 §6.3: no body for HEAD, 1xx, 204, 304, and a 2xx to CONNECT (a tunnel).
    let bodiless = request_method == Some("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        || (request_method == Some("CONNECT") && (200..300).contains(&status));
    let framing = match bodiless {
        true => Framing::Length(0),
        false => body_framing(message).unwrap_or(Framing::UntilClose),
    };
    let body = take_body(message);
    Building { exchange, body, framing, start_ns, status: resp.code }
}

/// The body is collected into the message's own (reused) buffer.
fn take_body(message: &mut HttpMessage) -> BodyBuffer {
    BodyBuffer { kept: std::mem::take(&mut message.body), len: 0, truncated: false }
}

fn finished(mut building: Building, kind: Kind, complete: bool, now_ns: u64, limits: &Limits) -> Parsed {
    let message = slot(&mut building.exchange, kind).get_or_insert_with(HttpMessage::default);
    message.complete = complete;
    body::finish(message, building.body, limits.max_body);
    Parsed { exchange: building.exchange, start_ns: building.start_ns, end_ns: now_ns, status: building.status }
}

/// Chunked or Content-Length framing, if the head says; `None` when it says neither.
fn body_framing(message: &HttpMessage) -> Option<Framing> {
    if let Some(te) = message.header("transfer-encoding") {
        let last = String::from_utf8_lossy(te).rsplit(',').next().map(|t| t.trim().to_ascii_lowercase());
        if last.as_deref() == Some("chunked") {
            return Some(Framing::ChunkSize);
        }
    }
    let length = message.header("content-length")?;
    std::str::from_utf8(length).ok()?.trim().parse().ok().map(Framing::Length)
}

/// Whether `data` begins like an HTTP/1 request (`METHOD SP`) or response (`HTTP/1.`).
pub fn starts_message(data: &[u8]) -> Option<bool> {
    const METHODS: [&[u8]; 9] =
        [b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE "];
    if METHODS.iter().any(|m| data.starts_with(m)) {
        Some(true)
    } else if data.starts_with(b"HTTP/1.") {
        Some(false)
    } else {
        None
    }
}

/// One HTTP/1 connection: a request parser on the direction that carries requests, a response
/// parser on the other.
#[derive(Debug)]
pub struct H1Conn {
    pub program_is_client: bool,
    requests: Parser,
    responses: Parser,
    /// Requests parsed whole, in order, waiting for their responses.
    waiting: VecDeque<Parsed>,
    /// An upgrade (101 Switching Protocols, CONNECT 2xx) was answered: what follows is not HTTP/1.
    pub upgraded: bool,
}

impl H1Conn {
    pub fn new(program_is_client: bool) -> H1Conn {
        H1Conn {
            program_is_client,
            requests: Parser::new(Kind::Request),
            responses: Parser::new(Kind::Response),
            waiting: VecDeque::new(),
            upgraded: false,
        }
    }

    /// Feeds a call's bytes; `requests` says which way they go.
    pub fn feed(
        &mut self,
        requests: bool,
        ts_ns: u64,
        data: &[u8],
        limits: &Limits,
        out: &mut dyn FnMut(HttpExchange),
    ) -> Result<(), Desync> {
        self.feed_reusing(requests, ts_ns, data, limits, &mut Spare::default(), &mut |e| out(*e))
    }

    /// [`H1Conn::feed`], building exchanges in boxes `spare` kept.
    pub(crate) fn feed_reusing(
        &mut self,
        requests: bool,
        ts_ns: u64,
        data: &[u8],
        limits: &Limits,
        spare: &mut Spare,
        out: &mut dyn FnMut(Box<HttpExchange>),
    ) -> Result<(), Desync> {
        if requests {
            self.requests.push(data, ts_ns);
            while let Some(request) = self.requests.step(None, ts_ns, limits, spare)? {
                self.waiting.push_back(request);
                if self.waiting.len() > limits.max_pending {
                    let oldest = self.waiting.pop_front();
                    out(self.exchange(oldest, None, spare));
                }
            }
            return Ok(());
        }
        self.responses.push(data, ts_ns);
        loop {
            let H1Conn { requests, responses, waiting, .. } = self;
            let method = waiting
                .front()
                .and_then(Parsed::method)
                .or_else(|| requests.current.as_ref().and_then(|b| b.exchange.method.as_deref()));
            let Some(response) = responses.step(method, ts_ns, limits, spare)? else {
                return Ok(());
            };
            let status = response.status.unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                spare.recycle(response.exchange);
                continue; // interim: the final response follows
            }
            let upgrade = status == 101 || (method == Some("CONNECT") && (200..300).contains(&status));
            let request = self.waiting.pop_front().or_else(|| self.requests.take_unfinished(ts_ns, limits));
            out(self.exchange(request, Some(response), spare));
            if upgrade {
                self.upgraded = true;
                return Ok(());
            }
        }
    }

    /// Emits what is left: requests without responses, messages in progress.
    pub fn finish(&mut self, now_ns: u64, limits: &Limits, out: &mut dyn FnMut(HttpExchange)) {
        self.finish_reusing(now_ns, limits, &mut Spare::default(), &mut |e| out(*e));
    }

    /// [`H1Conn::finish`], with `spare`'s boxes.
    pub(crate) fn finish_reusing(
        &mut self,
        now_ns: u64,
        limits: &Limits,
        spare: &mut Spare,
        out: &mut dyn FnMut(Box<HttpExchange>),
    ) {
        let response = self.responses.take_unfinished(now_ns, limits);
        let unfinished = self.requests.take_unfinished(now_ns, limits);
        let requests: Vec<Parsed> = self.waiting.drain(..).chain(unfinished).collect();
        let mut requests = requests.into_iter();
        let first = requests.next();
        if response.is_some() || first.is_some() {
            out(self.exchange(first, response, spare));
        }
        for request in requests {
            out(self.exchange(Some(request), None, spare));
        }
    }

    /// The exchange of `request` and `response`, in the box of either, setting every field.
    fn exchange(&self, request: Option<Parsed>, response: Option<Parsed>, spare: &mut Spare) -> Box<HttpExchange> {
        let end_ns = response.as_ref().or(request.as_ref()).map_or(0, |p| p.end_ns);
        let request_ns = request.as_ref().map(|r| r.start_ns);
        let (status, response_ns) = match &response {
            Some(r) => (r.status, Some(r.start_ns)),
            None => (None, None),
        };
        let mut exchange = match (request, response) {
            (Some(request), Some(mut response)) => {
                let mut exchange = request.exchange;
                std::mem::swap(&mut exchange.response, &mut response.exchange.response);
                spare.recycle(response.exchange);
                exchange
            }
            (Some(request), None) => {
                let mut exchange = request.exchange;
                exchange.response = None;
                exchange
            }
            (None, response) => {
                let mut exchange = match response {
                    Some(response) => response.exchange,
                    None => spare.exchange(),
                };
                exchange.request = None;
                exchange.method = None;
                exchange.path = None;
                exchange
            }
        };
        let authority = exchange.request.as_ref().and_then(|r| r.header("host"));
        let mut slot = exchange.authority.take();
        set_lossy(&mut slot, authority);
        exchange.authority = slot;
        set_text(&mut exchange.scheme, Some("https"));
        exchange.proto = HttpProto::Http1;
        exchange.stream_id = None;
        exchange.status = status;
        exchange.request_ns = request_ns;
        exchange.response_ns = response_ns;
        exchange.end_ns = end_ns;
        exchange.program_is_client = self.program_is_client;
        exchange
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    /// Feeds (is_request, bytes) in order, one call each; returns the exchanges.
    fn run(calls: &[(bool, &[u8])]) -> Vec<HttpExchange> {
        let mut conn = H1Conn::new(true);
        let mut out = Vec::new();
        for (i, (requests, data)) in calls.iter().enumerate() {
            conn.feed(*requests, i as u64, data, &limits(), &mut |e| out.push(e)).unwrap();
        }
        conn.finish(99, &limits(), &mut |e| out.push(e));
        out
    }

    #[test]
    fn keep_alive_exchanges_pair_in_order_with_bodies() {
        let out = run(&[
            (true, b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel"),
            (true, b"lo"),
            (false, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            (true, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"),
            (false, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        ]);
        assert_eq!(out.len(), 2);
        let (a, b) = (&out[0], &out[1]);
        assert_eq!((a.method.as_deref(), a.path.as_deref(), a.status), (Some("POST"), Some("/a"), Some(200)));
        assert_eq!(a.request.as_ref().unwrap().body, b"hello");
        assert_eq!(a.response.as_ref().unwrap().body, b"ok");
        assert_eq!((a.request_ns, a.response_ns, a.end_ns), (Some(0), Some(2), 2));
        assert_eq!((b.path.as_deref(), b.status, b.authority.as_deref()), (Some("/b"), Some(404), Some("h")));
        assert_eq!(b.response.as_ref().unwrap().reason.as_deref(), Some("Not Found"));
        assert!(b.response.as_ref().unwrap().complete);
    }

    #[test]
    fn pipelined_requests_and_chunked_response_with_trailers() {
        let out = run(&[
            (true, b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: h\r\n\r\n"),
            (false, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"),
            (false, b"2;ext=1\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"),
            // The HEAD response announces a length but has no body.
            (false, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
        ]);
        assert_eq!(out.len(), 2);
        let first = out[0].response.as_ref().unwrap();
        assert_eq!(first.body, b"abcde");
        assert_eq!(first.trailers, vec![Header::new("X-Trailer", "t")]);
        assert_eq!(out[1].method.as_deref(), Some("HEAD"));
        assert!(out[1].response.as_ref().unwrap().body.is_empty());
        assert!(out[1].response.as_ref().unwrap().complete);
    }

    #[test]
    fn gzip_body_is_decoded_and_raw_kept() {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"plain text").unwrap();
        let gz = e.finish().unwrap();
        let mut response =
            format!("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n", gz.len()).into_bytes();
        response.extend(&gz);
        let out = run(&[(true, b"GET / HTTP/1.1\r\n\r\n"), (false, &response)]);
        let r = out[0].response.as_ref().unwrap();
        assert_eq!((r.body.as_slice(), r.decoded, r.raw_body.as_deref()), (&b"plain text"[..], true, Some(&gz[..])));
        assert_eq!(r.encodings, vec!["gzip".to_string()]);
    }

    #[test]
    fn response_until_close_and_unanswered_request_come_out_at_the_end() {
        let out = run(&[
            (true, b"GET /x HTTP/1.1\r\n\r\n"),
            (false, b"HTTP/1.0 200 OK\r\n\r\nstream"),
            (true, b"GET /y HTTP/1.1\r\n\r\n"),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].response.as_ref().unwrap().body, b"stream");
        assert!(!out[0].response.as_ref().unwrap().complete, "tlstap does not see the connection close");
        assert_eq!((out[1].path.as_deref(), out[1].response.is_none()), (Some("/y"), true));
    }

    #[test]
    fn garbage_and_upgrades_stop_decoding() {
        let mut conn = H1Conn::new(true);
        let mut out = Vec::new();
        conn.feed(true, 0, b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", &limits(), &mut |e| out.push(e)).unwrap();
        conn.feed(false, 1, b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x05hello", &limits(), &mut |e| out.push(e))
            .unwrap();
        assert!(conn.upgraded);
        assert_eq!(out[0].status, Some(101));
        let mut conn = H1Conn::new(true);
        assert_eq!(conn.feed(true, 0, b"GET / HTTP/1.1\r\nbad header\r\n\r\n", &limits(), &mut |_| {}), Err(Desync));
        let mut conn = H1Conn::new(true);
        conn.feed(true, 0, b"GET / HTTP/1.1\r\n\r\n", &limits(), &mut |_| {}).unwrap();
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(conn.feed(false, 1, bad_chunk, &limits(), &mut |_| {}), Err(Desync));
    }
}

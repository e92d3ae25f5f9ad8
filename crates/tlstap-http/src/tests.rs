//! The decoder end to end on hand-built connections. The byte-exact checks against real Go
//! programs, curl and tshark are in `crates/tlstap/tests/http.rs`.

use tlstap_core::http::{Header, HttpExchange, HttpProto};

use super::*;
use crate::h2::frame::{self, PREFACE};

/// An HPACK field as a test encoder writes it.
enum Field<'a> {
    /// Literal with incremental indexing, literal name.
    Insert(&'a str, &'a str),
    /// Literal without indexing, literal name.
    Plain(&'a str, &'a str),
    /// Indexed (static 1..=61, dynamic 62..).
    Index(u8),
}

fn block(fields: &[Field<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        assert!(s.len() < 127);
        out.push(s.len() as u8);
        out.extend(s.as_bytes());
    };
    for field in fields {
        match field {
            Field::Insert(n, v) => {
                out.push(0x40);
                string(&mut out, n);
                string(&mut out, v);
            }
            Field::Plain(n, v) => {
                out.push(0x00);
                string(&mut out, n);
                string(&mut out, v);
            }
            Field::Index(i) => {
                assert!(*i < 127);
                out.push(0x80 | i);
            }
        }
    }
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

fn settings() -> Vec<u8> {
    frame(frame::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])
}

/// GET https://example.test/p{n} with `x-req: {n}`, inserting `x-session: s1` on the first
/// request and referencing it (dynamic index 62) afterwards.
fn get_request(stream: u32, first: bool) -> Vec<u8> {
    let path = format!("/p{stream}");
    let mut fields = vec![
        Field::Index(2),
        Field::Index(7),
        Field::Plain(":path", &path),
        Field::Plain(":authority", "example.test"),
    ];
    fields.push(if first { Field::Insert("x-session", "s1") } else { Field::Index(62) });
    frame(frame::HEADERS, frame::END_HEADERS | frame::END_STREAM, stream, &block(&fields))
}

fn ok_response(stream: u32, body: &[u8]) -> Vec<u8> {
    let head =
        frame(frame::HEADERS, frame::END_HEADERS, stream, &block(&[Field::Index(8), Field::Plain("server", "t")]));
    [head, frame(frame::DATA, frame::END_STREAM, stream, body)].concat()
}

struct Run {
    decoder: HttpDecoder<u32, ()>,
    exchanges: Vec<HttpExchange>,
    taken: Vec<Taken>,
}

impl Run {
    fn new() -> Run {
        Run { decoder: HttpDecoder::new(Limits::default()), exchanges: Vec::new(), taken: Vec::new() }
    }

    fn call(&mut self, written: bool, data: &[u8]) -> &mut Run {
        self.call_lost(written, data, false)
    }

    fn call_lost(&mut self, written: bool, data: &[u8], lost: bool) -> &mut Run {
        let ts_ns = self.taken.len() as u64 * 10;
        let chunk = Chunk { written, ts_ns, data, lost, process: 1 };
        let exchanges = &mut self.exchanges;
        let taken = self.decoder.feed(&1, || (), chunk, &mut |_, e| exchanges.push(e));
        self.taken.push(taken);
        self
    }

    fn finish(&mut self) -> &mut Run {
        let exchanges = &mut self.exchanges;
        self.decoder.finish(&mut |_, e| exchanges.push(e));
        self
    }
}

fn header_value<'a>(fields: &'a [Header], name: &str) -> Option<&'a [u8]> {
    fields.iter().find(|h| h.is(name)).and_then(|h| h.value.as_deref())
}

#[test]
fn h2_client_connection_from_its_preface() {
    let mut run = Run::new();
    run.call(true, &[PREFACE.to_vec(), settings(), get_request(1, true)].concat())
        .call(false, &settings())
        .call(false, &ok_response(1, b"first"))
        .call(true, &get_request(3, false))
        .call(false, &ok_response(3, b"second"));
    assert_eq!(run.exchanges.len(), 2);
    assert!(run.taken.iter().all(|t| *t == Taken::Http));
    for (exchange, (stream, body)) in run.exchanges.iter().zip([(1, "first"), (3, "second")]) {
        assert_eq!(exchange.proto, HttpProto::H2);
        assert_eq!(exchange.stream_id, Some(stream));
        assert_eq!(exchange.method.as_deref(), Some("GET"));
        assert_eq!(exchange.scheme.as_deref(), Some("https"));
        assert_eq!(exchange.authority.as_deref(), Some("example.test"));
        assert_eq!(exchange.path, Some(format!("/p{stream}")));
        assert_eq!(exchange.status, Some(200));
        assert!(exchange.program_is_client);
        let request = exchange.request.as_ref().unwrap();
        assert_eq!(header_value(&request.headers, "x-session"), Some(&b"s1"[..]));
        let response = exchange.response.as_ref().unwrap();
        assert_eq!((response.body.as_slice(), response.complete), (body.as_bytes(), true));
        assert!(!exchange.has_undecodable_fields());
    }
    assert_eq!(run.decoder.stats.exchanges, 2);
}

/// The program is the server: it reads the preface (a 24-byte Read, as Go's server does), then
/// frame headers and payloads in separate Reads; the request's headers span a CONTINUATION,
/// the response body is gzip in padded DATA frames, and trailers end the stream.
#[test]
fn h2_server_continuation_padding_gzip_and_trailers() {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"hello, compressed world").unwrap();
    let gz = gz.finish().unwrap();
    let request_block = block(&[
        Field::Index(3),
        Field::Index(7),
        Field::Plain(":path", "/upload"),
        Field::Plain(":authority", "srv"),
        Field::Plain("content-type", "text/plain"),
    ]);
    let (part1, part2) = request_block.split_at(7);
    let mut padded = vec![4u8];
    padded.extend(&gz[..10]);
    padded.extend([0; 4]);
    let mut run = Run::new();
    run.call(true, &settings()).call(false, PREFACE);
    for f in [
        settings(),
        frame(frame::HEADERS, 0, 1, part1),
        frame(frame::CONTINUATION, frame::END_HEADERS, 1, part2),
        frame(frame::DATA, frame::END_STREAM, 1, b"payload"),
    ] {
        run.call(false, &f[..9]).call(false, &f[9..]);
    }
    let response_head = block(&[Field::Index(8), Field::Plain("content-encoding", "gzip")]);
    run.call(true, &frame(frame::HEADERS, frame::END_HEADERS, 1, &response_head))
        .call(true, &frame(frame::DATA, frame::PADDED, 1, &padded))
        .call(true, &frame(frame::DATA, 0, 1, &gz[10..]))
        .call(
            true,
            &frame(
                frame::HEADERS,
                frame::END_HEADERS | frame::END_STREAM,
                1,
                &block(&[Field::Plain("x-trailer", "done")]),
            ),
        );
    assert_eq!(run.exchanges.len(), 1);
    let e = &run.exchanges[0];
    assert!(!e.program_is_client);
    assert_eq!((e.method.as_deref(), e.path.as_deref(), e.status), (Some("POST"), Some("/upload"), Some(200)));
    assert_eq!(e.request.as_ref().unwrap().body, b"payload");
    let response = e.response.as_ref().unwrap();
    assert_eq!(response.body, b"hello, compressed world");
    assert_eq!((response.decoded, response.raw_body.as_deref()), (true, Some(&gz[..])));
    assert_eq!(response.trailers, vec![Header::new("x-trailer", "done")]);
    assert!(response.complete);
}

/// Joining mid-connection: the first request (which inserted `x-session`) is not seen. The
/// field is shown as undecodable, never as something else, and everything else is right.
#[test]
fn h2_joined_mid_connection_marks_only_what_it_cannot_know() {
    let mut run = Run::new();
    run.call(true, &get_request(3, false)).call(false, &ok_response(3, b"late"));
    assert_eq!(run.exchanges.len(), 1);
    let e = &run.exchanges[0];
    assert_eq!((e.path.as_deref(), e.status), (Some("/p3"), Some(200)));
    let request = e.request.as_ref().unwrap();
    assert_eq!(request.headers.last(), Some(&Header { name: None, value: None }));
    assert!(e.has_undecodable_fields());
    assert_eq!(e.response.as_ref().unwrap().body, b"late");
    assert!(e.program_is_client);
}

fn go(name: &str, value: &str) -> Option<hints::GoField> {
    Some((name.into(), value.into()))
}

/// The program's own fields of `get_request(stream, false)`, as Go's HPACK sees them.
fn go_request(stream: u32) -> Vec<Option<hints::GoField>> {
    let path = format!("/p{stream}");
    vec![
        go(":method", "GET"),
        go(":scheme", "https"),
        go(":path", &path),
        go(":authority", "example.test"),
        go("x-session", "s1"),
    ]
}

/// Hooked, joined mid-connection: what the wire cannot know comes from the program's encoder
/// (a client's requests), matched to this connection among the process's encoders.
#[test]
fn h2_joined_client_fills_sent_fields_from_its_encoder() {
    let mut run = Run::new();
    run.decoder = HttpDecoder::new(Limits::default()).with_go_reports();
    // Another connection's encoder in the same process, whose queue looks different.
    for f in [go(":method", "POST"), go(":scheme", "https"), go(":path", "/other")] {
        run.decoder.sent_field(1, 0xB, f);
    }
    for stream in [3, 5] {
        for f in go_request(stream) {
            run.decoder.sent_field(1, 0xA, f);
        }
        run.call(true, &get_request(stream, false)).call(false, &ok_response(stream, b"x"));
    }
    assert_eq!(run.exchanges.len(), 2);
    for e in &run.exchanges {
        assert!(!e.has_undecodable_fields(), "{e:?}");
        assert_eq!(header_value(&e.request.as_ref().unwrap().headers, "x-session"), Some(&b"s1"[..]));
    }
}

/// Hooked, joined mid-connection, a server: the program's report of a block it read comes after
/// the Read; the stream waits for it (then goes out filled), or goes out as it is past the hold.
#[test]
fn h2_joined_server_waits_for_received_reports() {
    let mut run = Run::new();
    run.decoder = HttpDecoder::new(Limits::default()).with_go_reports();
    run.call(false, &get_request(3, false)).call(true, &ok_response(3, b"x"));
    assert!(run.exchanges.is_empty(), "held for the report");
    let exchanges = &mut run.exchanges;
    run.decoder.received_block(&1, 3, go_request(3), &mut |_, e| exchanges.push(e));
    assert_eq!(run.exchanges.len(), 1);
    assert_eq!(header_value(&run.exchanges[0].request.as_ref().unwrap().headers, "x-session"), Some(&b"s1"[..]));
    // A report that disagrees with what the wire decoded fills nothing.
    run.call(false, &get_request(5, false)).call(true, &ok_response(5, b"y"));
    let mut wrong = go_request(5);
    wrong[2] = go(":path", "/elsewhere");
    let exchanges = &mut run.exchanges;
    run.decoder.received_block(&1, 5, wrong, &mut |_, e| exchanges.push(e));
    assert_eq!(run.exchanges.len(), 2);
    assert!(run.exchanges[1].has_undecodable_fields());
    // No report at all: out when the hold is over.
    run.call(false, &get_request(7, false)).call(true, &ok_response(7, b"z"));
    let exchanges = &mut run.exchanges;
    run.decoder.release_held(100 + REPORT_HOLD_NS, &mut |_, e| exchanges.push(e));
    assert_eq!(run.exchanges.len(), 3);
    assert!(run.exchanges[2].has_undecodable_fields());
}

#[test]
fn h2_entries_inserted_after_joining_are_known() {
    let mut run = Run::new();
    // Joined at a request that inserts: later references resolve.
    run.call(true, &get_request(5, true)).call(false, &ok_response(5, b"a"));
    run.call(true, &get_request(7, false)).call(false, &ok_response(7, b"b"));
    assert_eq!(run.exchanges.len(), 2);
    assert!(run.exchanges.iter().all(|e| !e.has_undecodable_fields()));
    assert_eq!(header_value(&run.exchanges[1].request.as_ref().unwrap().headers, "x-session"), Some(&b"s1"[..]));
}

#[test]
fn grpc_messages_and_status_from_trailers() {
    let request = block(&[
        Field::Index(3),
        Field::Index(7),
        Field::Plain(":path", "/pkg.Svc/Call"),
        Field::Plain(":authority", "srv"),
        Field::Plain("content-type", "application/grpc"),
    ]);
    let message = |data: &[u8]| [vec![0], (data.len() as u32).to_be_bytes().to_vec(), data.to_vec()].concat();
    let mut run = Run::new();
    run.call(true, &[PREFACE.to_vec(), frame(frame::HEADERS, frame::END_HEADERS, 1, &request)].concat())
        .call(true, &frame(frame::DATA, frame::END_STREAM, 1, &message(b"ping")))
        .call(
            false,
            &frame(
                frame::HEADERS,
                frame::END_HEADERS,
                1,
                &block(&[Field::Index(8), Field::Plain("content-type", "application/grpc")]),
            ),
        )
        .call(false, &frame(frame::DATA, 0, 1, &[message(b"pong1"), message(b"pong2")].concat()))
        .call(
            false,
            &frame(
                frame::HEADERS,
                frame::END_HEADERS | frame::END_STREAM,
                1,
                &block(&[Field::Plain("grpc-status", "0")]),
            ),
        );
    let e = &run.exchanges[0];
    assert_eq!(e.proto, HttpProto::Grpc);
    assert_eq!(e.grpc_status(), Some(0));
    let messages: Vec<&[u8]> = e.response.as_ref().unwrap().grpc_messages.iter().map(|m| m.data.as_slice()).collect();
    assert_eq!(messages, [&b"pong1"[..], b"pong2"]);
    assert_eq!(e.request.as_ref().unwrap().grpc_messages[0].data, b"ping");
}

#[test]
fn reset_streams_and_the_end_of_capture_emit_what_is_open() {
    let mut run = Run::new();
    run.call(true, &[PREFACE.to_vec(), get_request(1, true), get_request(3, false)].concat())
        .call(false, &frame(frame::RST_STREAM, 0, 1, &[0, 0, 0, 8]))
        .finish();
    assert_eq!(run.exchanges.len(), 2);
    assert_eq!((run.exchanges[0].stream_id, run.exchanges[0].response.is_none()), (Some(1), true));
    assert_eq!(run.exchanges[1].stream_id, Some(3));
}

/// Bytes lost in capture: the direction resyncs at a later frame boundary with a fresh
/// (partial) HPACK decoder, so a reference into entries it may have missed is not trusted.
#[test]
fn lost_bytes_resync_and_distrust_the_table() {
    let mut run = Run::new();
    run.call(true, &[PREFACE.to_vec(), get_request(1, true)].concat())
        .call(false, &ok_response(1, b"one"))
        .call_lost(true, &get_request(3, false)[..5], true)
        .call(true, b"\x00\x01garbage that is not a frame")
        .call(true, &get_request(5, false))
        .call(false, &ok_response(5, b"five"))
        .finish();
    assert_eq!(run.taken[3], Taken::NotHttp, "unsynced bytes are shown raw");
    let five = run.exchanges.iter().find(|e| e.stream_id == Some(5)).unwrap();
    assert_eq!(five.request.as_ref().unwrap().headers.last(), Some(&Header::default()));
    assert_eq!(five.response.as_ref().unwrap().body, b"five");
}

#[test]
fn http1_and_other_protocols_are_told_apart() {
    let mut run = Run::new();
    run.call(true, b"\x16\x03\x01 not http").call(true, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    run.call(false, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(run.taken, [Taken::NotHttp, Taken::Http, Taken::Http]);
    assert_eq!(run.exchanges.len(), 1);
    assert_eq!((run.exchanges[0].proto, run.exchanges[0].status), (HttpProto::Http1, Some(204)));
    // A server program: it reads the request.
    let mut run = Run::new();
    run.call(false, b"GET /s HTTP/1.1\r\n\r\n").call(true, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
    assert!(!run.exchanges[0].program_is_client);
    assert_eq!(run.exchanges[0].response.as_ref().unwrap().body, b"x");
}

#[test]
fn connections_beyond_the_bound_are_flushed_oldest_first() {
    let limits = Limits { max_conns: 2, ..Limits::default() };
    let mut decoder: HttpDecoder<u32, u32> = HttpDecoder::new(limits);
    let mut out = Vec::new();
    for conn in 0..3u32 {
        let chunk =
            Chunk { written: true, ts_ns: u64::from(conn), data: b"GET / HTTP/1.1\r\n\r\n", lost: false, process: 1 };
        decoder.feed(&conn, || conn, chunk, &mut |c, e| out.push((*c, e)));
    }
    assert_eq!(decoder.stats.conns_evicted, 1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 0, "the oldest connection went first, with its own context");
}

/// Lent exchanges ([`HttpDecoder::feed_borrowed`]) are the given ones ([`HttpDecoder::feed`]),
/// though built in boxes of exchanges shown before: over HTTP/1 connections of every shape
/// (keep-alive, pipelining past the pending bound, chunked with and without trailers, 1xx,
/// HEAD, bodies over the limit, a response without its request, requests without responses, a
/// desync, an upgrade, a body until the end) beside HTTP/2 connections whose exchanges are
/// taken back too.
#[test]
fn lent_exchanges_are_the_given_ones() {
    let h1: [(u32, bool, &[u8]); 21] = [
        (10, true, b"POST /a HTTP/1.1\r\nHost: h\r\nX-A: \xff\xfe\r\nContent-Length: 5\r\n\r\nhel"),
        (10, true, b"lo"),
        (10, false, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        (11, false, b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!"),
        (10, true, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\nHEAD /c HTTP/1.0\r\n\r\n"),
        (10, false, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"),
        (10, false, b"0\r\nX-Trailer: t\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
        (10, true, b"GET /d HTTP/1.1\r\n\r\n"),
        (10, false, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"),
        (10, true, b"GET /d2 HTTP/1.1\r\n\r\n"),
        (10, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        (12, true, b"PUT /big HTTP/1.1\r\nContent-Length: 40\r\n\r\n0123456789012345678901234567890123456789"),
        (12, true, b"GET /p1 HTTP/1.1\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\n\r\nGET /p3 HTTP/1.1\r\n\r\n"),
        (12, false, b"HTTP/1.1 204 No Content\r\nX-Empty:\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2"),
        (13, true, b"GET /x HTTP/1.1\r\n\r\n"),
        (13, false, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nda"),
        (13, false, b"ta"),
        (13, false, b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n"),
        (14, true, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
        (14, false, b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x05hello"),
        (15, false, b"HTTP/1.0 200 OK\r\n\r\nuntil the end"),
    ];
    let h2: [(bool, Vec<u8>); 4] = [
        (true, [PREFACE.to_vec(), settings(), get_request(1, true)].concat()),
        (false, [settings(), ok_response(1, b"first")].concat()),
        (true, get_request(3, false)),
        (false, ok_response(3, b"second")),
    ];
    // Three rounds, each on connections of its own, HTTP/2 before, between and after.
    let mut calls: Vec<(u32, bool, &[u8])> = Vec::new();
    for round in 0..3 {
        calls.extend(h2.iter().map(|(w, d)| (100 * round + 20, *w, &d[..])));
        calls.extend(h1.iter().map(|&(c, w, d)| (100 * round + c, w, d)));
        calls.push((100 * round + 10, true, b"DELETE /e HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"));
    }
    calls.extend(h2.iter().map(|(w, d)| (21, *w, &d[..])));
    let limits = Limits { max_body: 16, max_pending: 2, ..Limits::default() };
    let (mut given, mut lent) = (HttpDecoder::new(limits.clone()), HttpDecoder::new(limits));
    let (mut want, mut got) = (Vec::new(), Vec::new());
    for (i, &(conn, written, data)) in calls.iter().enumerate() {
        let chunk = Chunk { written, ts_ns: i as u64, data, lost: false, process: 1 };
        let a = given.feed(&conn, || conn, chunk, &mut |c, e| want.push((*c, e)));
        let b = lent.feed_borrowed(&conn, || conn, chunk, &mut |c, e| got.push((*c, e.clone())));
        assert_eq!(a, b, "call {i}");
    }
    given.finish(&mut |c, e| want.push((*c, e)));
    lent.finish(&mut |c, e| got.push((*c, e)));
    let trailers = want.iter().filter(|(_, e)| e.response.as_ref().is_some_and(|r| !r.trailers.is_empty())).count();
    assert_eq!((want.len(), trailers), (50, 3));
    assert_eq!(got, want);
    assert_eq!(lent.stats, given.stats);
}

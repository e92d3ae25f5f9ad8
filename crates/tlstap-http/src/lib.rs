//! Turns the ordered plaintext of each connection into HTTP exchanges: HTTP/1.x, HTTP/2 and
//! gRPC (HTTP/2 with `application/grpc`). Pure: bytes in, `tlstap_core::http::HttpExchange`
//! out, so it is tested without BPF or root.
//!
//! A connection's protocol is found from its bytes (tlstap sees plaintext after TLS, not the
//! ALPN exchange): the HTTP/2 client preface, an HTTP/1 start line, or HTTP/2 frames when
//! tlstap joined mid-way. Until then, and after framing is lost, calls are reported as not
//! taken, so the caller shows them raw: no byte is hidden because decoding failed.

mod body;
pub mod h1;
pub mod h2;
pub mod hints;
mod reuse;

use std::hash::Hash;

use rustc_hash::FxHashMap;
use tlstap_core::http::HttpExchange;

use reuse::Spare;

/// Memory bounds of the decoder.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Body bytes kept per message (and the most a body is decompressed to).
    pub max_body: usize,
    /// Longest HTTP/1 head (or trailer block).
    pub max_head: usize,
    /// Requests awaiting responses (HTTP/1) or open streams (HTTP/2) per connection.
    pub max_pending: usize,
    /// Connections tracked at once.
    pub max_conns: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_body: 8 << 20, max_head: 64 << 10, max_pending: 256, max_conns: 16_384 }
    }
}

/// One Read or Write call's bytes, in the connection's order.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    /// The program wrote these bytes (else it read them).
    pub written: bool,
    pub ts_ns: u64,
    pub data: &'a [u8],
    /// Bytes of this call after `data` were lost in capture.
    pub lost: bool,
    /// The process that made the call (whose Go header reports may fill its blocks).
    pub process: u32,
}

/// Whether a call's bytes went into an HTTP decoder (the caller need not show them raw).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Http,
    NotHttp,
}

/// Counters for the capture summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub exchanges: u64,
    /// Framing lost (a head or chunk that does not parse, bytes lost in capture).
    pub desyncs: u64,
    /// HTTP/2 DATA or trailers of streams whose start was not seen.
    pub unattributed_frames: u64,
    /// Connections dropped from tracking at the `max_conns` bound.
    pub conns_evicted: u64,
}

#[derive(Debug)]
enum Protocol {
    Detecting,
    Http1(Box<h1::H1Conn>),
    Http2(Box<h2::H2Conn>),
    /// Upgraded away from HTTP (WebSocket, CONNECT tunnel): shown raw from here on.
    NotHttp,
}

#[derive(Debug)]
struct Conn<C> {
    protocol: Protocol,
    /// The caller's context of the connection (process, names), handed back with each exchange.
    context: C,
    last_ns: u64,
}

/// Decodes every connection of a capture. `K` names a connection, `C` is what the caller wants
/// back with each exchange.
#[derive(Debug)]
pub struct HttpDecoder<K, C> {
    conns: FxHashMap<K, Conn<C>>,
    limits: Limits,
    /// Header fields from the programs themselves (--h2-hooks), when asked for.
    go_reports: Option<hints::SentFields>,
    pub stats: DecodeStats,
    /// What exchanges already shown allocated ([`HttpDecoder::feed_borrowed`]).
    spare: Spare,
    /// Exchanges a call completed, before they go out (kept for its capacity). Boxed as
    /// `Spare` keeps them.
    #[allow(clippy::vec_box)]
    emitted: Vec<Box<HttpExchange>>,
}

/// How long an ended HTTP/2 stream waits for the program's report of a block it read (reports
/// follow their Read by microseconds; this covers a loaded reader).
pub const REPORT_HOLD_NS: u64 = 500_000_000;

impl<K: Hash + Eq + Clone, C> HttpDecoder<K, C> {
    pub fn new(limits: Limits) -> Self {
        HttpDecoder {
            conns: FxHashMap::default(),
            limits,
            go_reports: None,
            stats: DecodeStats::default(),
            spare: Spare::default(),
            emitted: Vec::new(),
        }
    }

    /// Expect header fields from the programs (`sent_field`, `received_block`): HTTP/2 streams
    /// with undecodable received fields then wait up to [`REPORT_HOLD_NS`] for them.
    pub fn with_go_reports(mut self) -> Self {
        self.go_reports = Some(hints::SentFields::default());
        self
    }

    /// A header field a program's HPACK encoder `encoder` was given (`None`: not captured whole).
    pub fn sent_field(&mut self, process: u32, encoder: u64, field: Option<hints::GoField>) {
        if let Some(sent) = self.go_reports.as_mut() {
            sent.push(process, encoder, field);
        }
    }

    /// The fields a program decoded from the next header block it read on `key`'s stream
    /// `stream` (`None` entries: not captured whole).
    pub fn received_block(
        &mut self,
        key: &K,
        stream: u32,
        program: Vec<Option<hints::GoField>>,
        out: &mut dyn FnMut(&C, HttpExchange),
    ) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let Protocol::Http2(h2) = &mut conn.protocol else { return };
        let mut emitted = Vec::new();
        h2.received_report(stream, program, &self.limits, &mut |e| emitted.push(e));
        self.stats.exchanges += emitted.len() as u64;
        for exchange in emitted {
            out(&conn.context, exchange);
        }
    }

    /// Streams held for a report longer than [`REPORT_HOLD_NS`] before `now_ns` go out as they are.
    pub fn release_held(&mut self, now_ns: u64, out: &mut dyn FnMut(&C, HttpExchange)) {
        // Only a decoder expecting reports holds streams: spare the walk over every
        // connection at each tick otherwise.
        if self.go_reports.is_none() {
            return;
        }
        for conn in self.conns.values_mut() {
            let Protocol::Http2(h2) = &mut conn.protocol else { continue };
            let mut emitted = Vec::new();
            h2.release_held(Some(now_ns), &self.limits, &mut |e| emitted.push(e));
            self.stats.exchanges += emitted.len() as u64;
            for exchange in emitted {
                out(&conn.context, exchange);
            }
        }
    }

    /// Feeds one call, calling `out` for each exchange it completes. `context` is called once
    /// per connection, when it is first seen.
    pub fn feed(
        &mut self,
        key: &K,
        context: impl FnOnce() -> C,
        chunk: Chunk<'_>,
        out: &mut dyn FnMut(&C, HttpExchange),
    ) -> Taken {
        self.feed_then(key, context, chunk, &mut |context, exchange, _| out(context, *exchange))
    }

    /// [`HttpDecoder::feed`], lending each exchange to `out` rather than giving it: the decoder
    /// builds the next ones in what it allocated (what the capture uses: a sink only reads).
    pub fn feed_borrowed(
        &mut self,
        key: &K,
        context: impl FnOnce() -> C,
        chunk: Chunk<'_>,
        out: &mut dyn FnMut(&C, &HttpExchange),
    ) -> Taken {
        self.feed_then(key, context, chunk, &mut |context, exchange, spare| {
            out(context, &exchange);
            spare.recycle(exchange);
        })
    }

    fn feed_then(
        &mut self,
        key: &K,
        context: impl FnOnce() -> C,
        chunk: Chunk<'_>,
        out: &mut dyn FnMut(&C, Box<HttpExchange>, &mut Spare),
    ) -> Taken {
        // One lookup for a connection already known (the key is long: hashing it is not free).
        let HttpDecoder { conns, limits, stats, go_reports, spare, emitted } = self;
        if let Some(conn) = conns.get_mut(key) {
            return feed_known(conn, chunk, limits, stats, go_reports, spare, emitted, out);
        }
        if self.conns.len() >= self.limits.max_conns {
            self.evict_oldest(&mut |context, exchange| out(context, Box::new(exchange), &mut Spare::default()));
        }
        let conn = self.conns.entry(key.clone()).or_insert_with(|| Conn {
            protocol: Protocol::Detecting,
            context: context(),
            last_ns: chunk.ts_ns,
        });
        let HttpDecoder { limits, stats, go_reports, spare, emitted, .. } = self;
        feed_known(conn, chunk, limits, stats, go_reports, spare, emitted, out)
    }

    /// The capture is ending: emits every exchange still open, as it is.
    pub fn finish(&mut self, out: &mut dyn FnMut(&C, HttpExchange)) {
        let keys: Vec<K> = self.conns.keys().cloned().collect();
        for key in keys {
            self.finish_conn(&key, out);
        }
    }

    fn evict_oldest(&mut self, out: &mut dyn FnMut(&C, HttpExchange)) {
        let oldest = self.conns.iter().min_by_key(|(_, c)| c.last_ns).map(|(k, _)| k.clone());
        if let Some(key) = oldest {
            self.finish_conn(&key, out);
            self.stats.conns_evicted += 1;
        }
    }

    fn finish_conn(&mut self, key: &K, out: &mut dyn FnMut(&C, HttpExchange)) {
        let Some(mut conn) = self.conns.remove(key) else { return };
        if let (Protocol::Http2(h2), Some(sent)) = (&conn.protocol, self.go_reports.as_mut()) {
            if let Some(encoder) = h2.bound_encoder {
                sent.release(h2.process(), encoder);
            }
        }
        let mut emitted = Vec::new();
        finish_protocol(&mut conn.protocol, conn.last_ns, &self.limits, &mut |e| emitted.push(e));
        self.stats.exchanges += emitted.len() as u64;
        for exchange in emitted {
            out(&conn.context, exchange);
        }
    }
}

/// Feeds one call to a connection being tracked, handing `out` what it completes.
#[allow(clippy::too_many_arguments, clippy::vec_box)]
fn feed_known<C>(
    conn: &mut Conn<C>,
    chunk: Chunk<'_>,
    limits: &Limits,
    stats: &mut DecodeStats,
    go_reports: &mut Option<hints::SentFields>,
    spare: &mut Spare,
    emitted: &mut Vec<Box<HttpExchange>>,
    out: &mut dyn FnMut(&C, Box<HttpExchange>, &mut Spare),
) -> Taken {
    conn.last_ns = chunk.ts_ns;
    let mut hooked = go_reports.as_mut().map(|sent| h2::Hooked { sent, hold_ns: REPORT_HOLD_NS });
    let taken = feed_conn(&mut conn.protocol, chunk, limits, stats, hooked.as_mut(), spare, &mut |e| emitted.push(e));
    stats.exchanges += emitted.len() as u64;
    for exchange in emitted.drain(..) {
        out(&conn.context, exchange, spare);
    }
    taken
}

fn finish_protocol(protocol: &mut Protocol, now_ns: u64, limits: &Limits, out: &mut dyn FnMut(HttpExchange)) {
    match protocol {
        Protocol::Http1(conn) => conn.finish(now_ns, limits, out),
        Protocol::Http2(conn) => conn.finish(limits, out),
        Protocol::Detecting | Protocol::NotHttp => {}
    }
}

/// Detects the protocol if not known yet, then decodes the call.
fn feed_conn(
    protocol: &mut Protocol,
    chunk: Chunk<'_>,
    limits: &Limits,
    stats: &mut DecodeStats,
    hooked: Option<&mut h2::Hooked<'_>>,
    spare: &mut Spare,
    out: &mut dyn FnMut(Box<HttpExchange>),
) -> Taken {
    let dir = if chunk.written { 0 } else { 1 };
    if let Protocol::Detecting = protocol {
        *protocol = match detect(chunk.data) {
            Some(Detected::Preface) => Protocol::Http2(Box::new(h2::H2Conn::from_preface(dir, chunk.process))),
            Some(Detected::Http1 { request }) => Protocol::Http1(Box::new(h1::H1Conn::new(request == chunk.written))),
            Some(Detected::Frames) => Protocol::Http2(Box::new(h2::H2Conn::joined(chunk.process))),
            None => return Taken::NotHttp,
        };
    }
    match protocol {
        Protocol::Http1(conn) => {
            let requests = chunk.written == conn.program_is_client;
            let result = conn.feed_reusing(requests, chunk.ts_ns, chunk.data, limits, spare, out);
            if result.is_err() || chunk.lost {
                stats.desyncs += 1;
                conn.finish_reusing(chunk.ts_ns, limits, spare, out);
                *protocol = Protocol::Detecting;
                // Shown raw: some of its bytes were not decoded.
                return Taken::NotHttp;
            }
            if conn.upgraded {
                *protocol = Protocol::NotHttp;
            }
            Taken::Http
        }
        Protocol::Http2(conn) => {
            let (before, synced_before) = (conn.unattributed_frames, conn.is_synced(dir));
            conn.feed(dir, chunk.ts_ns, chunk.data, chunk.lost, limits, hooked, &mut |e| out(Box::new(e)));
            stats.unattributed_frames += conn.unattributed_frames - before;
            // A call that neither was nor became synced was not decoded.
            match synced_before || conn.is_synced(dir) {
                true => Taken::Http,
                false => Taken::NotHttp,
            }
        }
        Protocol::Detecting | Protocol::NotHttp => Taken::NotHttp,
    }
}

enum Detected {
    /// Begins with (a part of) the HTTP/2 client preface.
    Preface,
    Http1 {
        request: bool,
    },
    /// HTTP/2 frames of a connection already running.
    Frames,
}

fn detect(data: &[u8]) -> Option<Detected> {
    let preface = h2::frame::PREFACE;
    if data.len() >= 4 && (data.starts_with(preface) || preface.starts_with(data)) {
        return Some(Detected::Preface);
    }
    if let Some(request) = h1::starts_message(data) {
        return Some(Detected::Http1 { request });
    }
    h2::frame::sync_point(data).map(|_| Detected::Frames)
}

#[cfg(test)]
mod tests;

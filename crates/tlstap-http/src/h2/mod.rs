//! HTTP/2: frames read from each direction, header blocks (HEADERS or PUSH_PROMISE and their
//! CONTINUATIONs) decoded by one HPACK decoder per direction, streams reassembled, and one
//! exchange emitted per stream when its response ends or it is reset.
//!
//! A direction is *synced* when tlstap knows where frames begin: from the client preface, or,
//! joining mid-way, from a call whose bytes tile into plausible frames (`frame::tiles_into_frames`)
//! or that is one plausible frame header (Go reads a header, then its payload). Syncing anew
//! (or losing bytes) starts a partial HPACK decoder, which marks what it cannot know.

pub mod frame;
pub mod hpack;

use std::collections::{BTreeMap, VecDeque};

use tlstap_core::http::{Header, HttpExchange, HttpMessage, HttpProto};

use crate::body::{self, BodyBuffer};
use crate::hints::{self, GoField, SentFields};
use crate::Limits;
use frame::FrameHeader;

/// Largest frame buffered (RFC 9113's largest frame size is 16 MiB - 1; Go's peers use 1 MiB).
const MAX_FRAME: u32 = (1 << 24) - 1;
/// Largest header block assembled; a larger one is skipped and HPACK state restarted.
const MAX_BLOCK: usize = 1 << 20;

/// Which way bytes went: 0 = the program wrote them, 1 = it read them.
pub type DirIndex = usize;

#[derive(Debug)]
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    /// A PUSH_PROMISE's block: decoded to keep HPACK in step, not shown.
    push: bool,
    fragment: Vec<u8>,
}

#[derive(Debug)]
struct Direction {
    synced: bool,
    /// Synced on a lone frame header: until a frame ends exactly at the end of a call, the
    /// sync is only a guess and a frame that overruns a call boundary undoes it.
    tentative: bool,
    /// Bytes of the client preface still to skip.
    preface_left: usize,
    buf: Vec<u8>,
    hpack: hpack::Decoder,
    block: Option<PendingBlock>,
    /// Inside CONTINUATIONs of a block whose start was not seen: its insertions are unknown,
    /// so HPACK restarts (partial) when it ends.
    orphan_block: bool,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            synced: false,
            tentative: false,
            preface_left: 0,
            buf: Vec::new(),
            hpack: hpack::Decoder::partial(),
            block: None,
            orphan_block: false,
        }
    }

    fn desync(&mut self) {
        *self = Direction::new();
    }
}

/// One side of a stream: what one peer sent on it.
#[derive(Debug, Default)]
struct Side {
    /// `None` until a (final, non-1xx) header block arrives.
    headers: Option<Vec<Header>>,
    trailers: Vec<Header>,
    body: BodyBuffer,
    ended: bool,
    start_ns: Option<u64>,
    end_ns: u64,
    /// Header blocks seen on this side (1xx included): the program's n-th received report of
    /// the stream is its n-th block.
    blocks: u32,
    /// Received reports taken so far.
    reports: u32,
    /// Reports that came before their block.
    early: VecDeque<Vec<Option<GoField>>>,
    /// Blocks with undecodable fields whose report has not come: (block number, trailers?).
    awaiting: VecDeque<(u32, bool)>,
}

impl Side {
    fn value(&self, name: &str) -> Option<String> {
        let field = self.headers.as_ref()?.iter().find(|h| h.is(name))?;
        field.value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn has(&self, name: &str) -> bool {
        self.headers.as_ref().is_some_and(|hs| hs.iter().any(|h| h.is(name)))
    }
}

#[derive(Debug, Default)]
struct Stream {
    sides: [Side; 2],
}

#[derive(Debug)]
pub struct H2Conn {
    /// Known from the preface's direction, or from the first `:method`/`:status` decoded.
    pub program_is_client: Option<bool>,
    dirs: [Direction; 2],
    streams: BTreeMap<u32, Stream>,
    /// DATA or trailers for streams whose headers were not seen (joined mid-stream).
    pub unattributed_frames: u64,
    /// The program's process (whose sent fields may fill this connection's written blocks).
    process: u32,
    /// The program's HPACK encoder of this connection, once matched (hints.rs).
    pub bound_encoder: Option<u64>,
    /// Ended streams waiting for the program's report of a received block: (id, stream, the
    /// time after which they go out as they are).
    held: Vec<(u32, Stream, u64)>,
}

/// What a connection's decoding gets from the program itself (--h2-hooks), when hooked.
#[derive(Debug)]
pub struct Hooked<'a> {
    pub sent: &'a mut SentFields,
    /// How long an ended stream waits for a received block's report.
    pub hold_ns: u64,
}

impl H2Conn {
    /// A connection seen from its start: `preface_dir` carries the client preface.
    pub fn from_preface(preface_dir: DirIndex, process: u32) -> H2Conn {
        let mut conn = H2Conn::joined(process);
        conn.program_is_client = Some(preface_dir == 0);
        for dir in &mut conn.dirs {
            dir.synced = true;
            dir.hpack = hpack::Decoder::complete();
        }
        conn.dirs[preface_dir].preface_left = frame::PREFACE.len();
        conn
    }

    /// A connection joined mid-way: each direction syncs on its own.
    pub fn joined(process: u32) -> H2Conn {
        H2Conn {
            program_is_client: None,
            dirs: [Direction::new(), Direction::new()],
            streams: BTreeMap::new(),
            unattributed_frames: 0,
            process,
            bound_encoder: None,
            held: Vec::new(),
        }
    }

    /// The process whose connection this is.
    pub fn process(&self) -> u32 {
        self.process
    }

    /// Whether `dir`'s frame boundaries are known (its bytes are being decoded).
    pub fn is_synced(&self, dir: DirIndex) -> bool {
        self.dirs[dir].synced
    }

    /// Feeds one call's bytes; `lost` = bytes of the call after `data` were not captured.
    #[allow(clippy::too_many_arguments)]
    pub fn feed(
        &mut self,
        dir: DirIndex,
        ts_ns: u64,
        mut data: &[u8],
        lost: bool,
        limits: &Limits,
        mut hooked: Option<&mut Hooked<'_>>,
        out: &mut dyn FnMut(HttpExchange),
    ) {
        let d = &mut self.dirs[dir];
        if d.preface_left > 0 {
            let n = d.preface_left.min(data.len());
            if frame::PREFACE[frame::PREFACE.len() - d.preface_left..][..n] != data[..n] {
                d.desync();
            } else {
                d.preface_left -= n;
                data = &data[n..];
            }
        }
        if !d.synced && data.starts_with(frame::PREFACE) {
            // A connection seen from its start after all (the server wrote first).
            *d = Direction::new();
            d.synced = true;
            d.hpack = hpack::Decoder::complete();
            d.preface_left = frame::PREFACE.len();
            self.program_is_client = Some(dir == 0);
            return self.feed(dir, ts_ns, data, lost, limits, hooked, out);
        }
        if !d.synced {
            let Some(point) = frame::sync_point(data) else { return };
            *d = Direction::new();
            d.synced = true;
            d.tentative = point == frame::SyncPoint::LoneHeader;
        }
        self.dirs[dir].buf.extend_from_slice(data);
        self.frames(dir, ts_ns, limits, hooked.as_deref_mut(), out);
        let d = &mut self.dirs[dir];
        if d.tentative && d.buf.len() > frame::HEADER_LEN {
            d.desync();
        }
        if lost {
            d.desync();
            // Blocks were missed: the encoder's queue no longer lines up with this side.
            if dir == 0 {
                if let (Some(encoder), Some(h)) = (self.bound_encoder.take(), hooked) {
                    h.sent.release(self.process, encoder);
                }
            }
            // What the lost bytes carried is unknown: every open stream's body in this
            // direction may miss some.
            for stream in self.streams.values_mut() {
                if !stream.sides[dir].ended {
                    stream.sides[dir].body.truncated = true;
                }
            }
        }
        self.bound_streams(limits, out);
    }

    /// Handles every whole frame in the direction's buffer. The buffer is taken out while its
    /// frames are handled, so payloads are borrowed from it, not copied.
    fn frames(
        &mut self,
        dir: DirIndex,
        ts_ns: u64,
        limits: &Limits,
        mut hooked: Option<&mut Hooked<'_>>,
        out: &mut dyn FnMut(HttpExchange),
    ) {
        let buf = std::mem::take(&mut self.dirs[dir].buf);
        let mut at = 0;
        while let Some(header) = FrameHeader::parse(&buf[at..]) {
            if header.len > MAX_FRAME {
                return self.dirs[dir].desync();
            }
            let end = at + frame::HEADER_LEN + header.len as usize;
            if buf.len() < end {
                break;
            }
            if end == buf.len() {
                self.dirs[dir].tentative = false;
            }
            self.frame(dir, header, &buf[at + frame::HEADER_LEN..end], ts_ns, limits, hooked.as_deref_mut(), out);
            at = end;
            if !self.dirs[dir].synced {
                return; // desynced: what is left of the buffer is not framed
            }
        }
        let mut rest = buf;
        rest.drain(..at);
        self.dirs[dir].buf = rest;
    }

    #[allow(clippy::too_many_arguments)]
    fn frame(
        &mut self,
        dir: DirIndex,
        h: FrameHeader,
        payload: &[u8],
        ts_ns: u64,
        limits: &Limits,
        hooked: Option<&mut Hooked<'_>>,
        out: &mut dyn FnMut(HttpExchange),
    ) {
        match h.kind {
            frame::DATA => {
                let Some(data) = frame::unpad(h.flags, payload) else { return self.dirs[dir].desync() };
                let Some(stream) = self.streams.get_mut(&h.stream) else {
                    self.unattributed_frames += 1;
                    return;
                };
                let side = &mut stream.sides[dir];
                side.body.push(data, limits.max_body);
                side.end_ns = ts_ns;
                if h.flags & frame::END_STREAM != 0 {
                    side.ended = true;
                    self.maybe_emit(h.stream, limits, hooked.as_deref(), out);
                }
            }
            frame::HEADERS | frame::PUSH_PROMISE => {
                let Some(mut fragment) = frame::unpad(h.flags, payload) else { return self.dirs[dir].desync() };
                let mut stream = h.stream;
                if h.kind == frame::PUSH_PROMISE {
                    let Some((id, rest)) = fragment.split_first_chunk::<4>() else { return self.dirs[dir].desync() };
                    stream = u32::from_be_bytes(*id) & 0x7fff_ffff;
                    fragment = rest;
                } else if h.flags & frame::PRIORITY_FLAG != 0 {
                    let Some(rest) = fragment.get(5..) else { return self.dirs[dir].desync() };
                    fragment = rest;
                }
                self.dirs[dir].orphan_block = false;
                self.dirs[dir].block = Some(PendingBlock {
                    stream,
                    end_stream: h.kind == frame::HEADERS && h.flags & frame::END_STREAM != 0,
                    push: h.kind == frame::PUSH_PROMISE,
                    fragment: fragment.to_vec(),
                });
                if h.flags & frame::END_HEADERS != 0 {
                    self.header_block(dir, ts_ns, limits, hooked, out);
                }
            }
            frame::CONTINUATION => {
                let d = &mut self.dirs[dir];
                match d.block.as_mut() {
                    Some(block) if block.stream == h.stream || block.push => {
                        if block.fragment.len() + payload.len() > MAX_BLOCK {
                            d.block = None;
                            d.orphan_block = true;
                        } else {
                            block.fragment.extend_from_slice(payload);
                        }
                    }
                    _ => d.orphan_block = true,
                }
                if h.flags & frame::END_HEADERS != 0 {
                    if std::mem::take(&mut self.dirs[dir].orphan_block) {
                        self.dirs[dir].hpack = hpack::Decoder::partial();
                    } else {
                        self.header_block(dir, ts_ns, limits, hooked, out);
                    }
                }
            }
            frame::RST_STREAM => {
                if let Some(stream) = self.streams.remove(&h.stream) {
                    out(self.exchange(h.stream, stream, limits));
                }
            }
            // SETTINGS, PING, GOAWAY, WINDOW_UPDATE, PRIORITY and extensions carry no message.
            _ => {}
        }
    }

    fn header_block(
        &mut self,
        dir: DirIndex,
        ts_ns: u64,
        limits: &Limits,
        mut hooked: Option<&mut Hooked<'_>>,
        out: &mut dyn FnMut(HttpExchange),
    ) {
        let Some(block) = self.dirs[dir].block.take() else { return };
        let mut fields = match self.dirs[dir].hpack.decode(&block.fragment) {
            Ok(fields) => fields,
            Err(_) => {
                // What this block inserted is unknown from here on.
                self.dirs[dir].hpack = hpack::Decoder::partial();
                vec![Header::default()]
            }
        };
        // A block the program wrote: its encoder's fields, matched (hints.rs).
        if let (0, Some(h)) = (dir, hooked.as_deref_mut()) {
            if let Some(program) = h.sent.take_block(self.process, &mut self.bound_encoder, &fields) {
                hints::fill(&mut fields, &program);
            }
        }
        if block.push {
            return;
        }
        let has = |name: &str| fields.iter().any(|f| f.is(name) && f.value.is_some());
        if self.program_is_client.is_none() {
            if has(":method") {
                self.program_is_client = Some(dir == 0);
            } else if has(":status") {
                self.program_is_client = Some(dir == 1);
            }
        }
        let informational = fields
            .iter()
            .find(|f| f.is(":status"))
            .and_then(|f| f.value.as_deref())
            .is_some_and(|v| v.len() == 3 && v[0] == b'1');
        // Trailers never hold pseudo-header fields; a request or response always does.
        let is_start = fields.iter().any(|f| f.name.as_deref().is_some_and(|n| n.starts_with(b":")));
        let stream = match self.streams.get_mut(&block.stream) {
            Some(stream) => stream,
            None if is_start => self.streams.entry(block.stream).or_default(),
            None => {
                self.unattributed_frames += 1;
                return;
            }
        };
        let side = &mut stream.sides[dir];
        let number = side.blocks;
        side.blocks += 1;
        // A block the program read: its report may have come first (calls are ordered apart).
        if dir == 1 && side.reports > number {
            if let Some(program) = side.early.pop_front() {
                hints::fill(&mut fields, &program);
            }
        }
        let undecodable = dir == 1 && hooked.is_some() && fields.iter().any(|f| !f.is_complete());
        if informational {
            // 1xx: the final response follows on the same stream.
        } else if side.headers.is_none() {
            side.headers = Some(fields);
            side.start_ns = Some(ts_ns);
            if undecodable {
                side.awaiting.push_back((number, false));
            }
        } else {
            side.trailers = fields;
            if undecodable {
                side.awaiting.push_back((number, true));
            }
        }
        side.end_ns = ts_ns;
        if block.end_stream {
            side.ended = true;
            self.maybe_emit(block.stream, limits, hooked.as_deref(), out);
        }
    }

    /// The program's report of the next block it read on `stream` (--h2-hooks): fills that
    /// block's undecodable fields, at once or when the block comes; a held stream then goes out.
    pub fn received_report(
        &mut self,
        stream: u32,
        program: Vec<Option<GoField>>,
        limits: &Limits,
        out: &mut dyn FnMut(HttpExchange),
    ) {
        let held_at = self.held.iter().position(|(id, _, _)| *id == stream);
        let side = match held_at {
            Some(i) => &mut self.held[i].1.sides[1],
            None => match self.streams.get_mut(&stream) {
                Some(s) => &mut s.sides[1],
                None => return, // a stream tlstap never saw the start of
            },
        };
        let number = side.reports;
        side.reports += 1;
        if number >= side.blocks {
            side.early.push_back(program);
            return;
        }
        if side.awaiting.front().is_some_and(|(n, _)| *n == number) {
            if let Some((_, trailers)) = side.awaiting.pop_front() {
                let fields = if trailers { Some(&mut side.trailers) } else { side.headers.as_mut() };
                if let Some(fields) = fields {
                    hints::fill(fields, &program);
                }
            }
        }
        if let Some(i) = held_at {
            if self.held[i].1.sides[1].awaiting.is_empty() {
                let (id, stream, _) = self.held.swap_remove(i);
                out(self.exchange(id, stream, limits));
            }
        }
    }

    /// Held streams whose wait is over (`now_ns` None: all of them) go out as they are.
    pub fn release_held(&mut self, now_ns: Option<u64>, limits: &Limits, out: &mut dyn FnMut(HttpExchange)) {
        let mut i = 0;
        while i < self.held.len() {
            if now_ns.is_none_or(|now| self.held[i].2 <= now) {
                let (id, stream, _) = self.held.swap_remove(i);
                out(self.exchange(id, stream, limits));
            } else {
                i += 1;
            }
        }
    }

    /// A stream is emitted when its response has ended (a request still open then, as in a
    /// server that answers early, is shown as it is), or when both sides ended.
    /// Hooked, a stream still missing the program's report of a block it read is held until
    /// the report comes or `hold_ns` passes.
    fn maybe_emit(&mut self, id: u32, limits: &Limits, hooked: Option<&Hooked<'_>>, out: &mut dyn FnMut(HttpExchange)) {
        let Some(stream) = self.streams.get(&id) else { return };
        let done = stream.sides.iter().all(|s| s.ended) || stream.sides.iter().any(|s| s.ended && s.has(":status"));
        if done {
            if let Some(stream) = self.streams.remove(&id) {
                match hooked {
                    Some(h) if !stream.sides[1].awaiting.is_empty() => {
                        let deadline = stream.sides.iter().map(|s| s.end_ns).max().unwrap_or(0) + h.hold_ns;
                        self.held.push((id, stream, deadline));
                    }
                    _ => out(self.exchange(id, stream, limits)),
                }
            }
        }
    }

    /// Too many open streams: the oldest go out as they are.
    fn bound_streams(&mut self, limits: &Limits, out: &mut dyn FnMut(HttpExchange)) {
        while self.streams.len() > limits.max_pending {
            let Some((id, stream)) = self.streams.pop_first() else { break };
            out(self.exchange(id, stream, limits));
        }
    }

    /// Emits every stream still open (the capture is ending).
    pub fn finish(&mut self, limits: &Limits, out: &mut dyn FnMut(HttpExchange)) {
        self.release_held(None, limits, out);
        for (id, stream) in std::mem::take(&mut self.streams) {
            out(self.exchange(id, stream, limits));
        }
    }

    fn exchange(&self, id: u32, stream: Stream, limits: &Limits) -> HttpExchange {
        let [written, read] = stream.sides;
        // The request side is the one with :method; failing that, the program's role says.
        let written_is_request = if written.has(":method") || read.has(":status") {
            true
        } else if read.has(":method") || written.has(":status") {
            false
        } else {
            self.program_is_client.unwrap_or(true)
        };
        let (request, response) = if written_is_request { (written, read) } else { (read, written) };
        let grpc = [&request, &response]
            .iter()
            .any(|s| s.value("content-type").is_some_and(|ct| ct.starts_with("application/grpc")));
        let end_ns = request.end_ns.max(response.end_ns);
        HttpExchange {
            proto: if grpc { HttpProto::Grpc } else { HttpProto::H2 },
            stream_id: Some(id),
            method: request.value(":method"),
            scheme: request.value(":scheme"),
            authority: request.value(":authority"),
            path: request.value(":path"),
            status: response.value(":status").and_then(|s| s.parse().ok()),
            request_ns: request.start_ns,
            response_ns: response.start_ns,
            end_ns,
            program_is_client: written_is_request,
            request: message(request, grpc, limits),
            response: message(response, grpc, limits),
        }
    }
}

fn message(side: Side, grpc: bool, limits: &Limits) -> Option<HttpMessage> {
    let headers = side.headers?;
    let mut message = HttpMessage {
        complete: side.ended && !side.body.truncated,
        headers,
        trailers: side.trailers,
        ..HttpMessage::default()
    };
    body::finish(&mut message, side.body, limits.max_body);
    if grpc {
        let encoding = message.header("grpc-encoding").map(<[u8]>::to_vec);
        message.grpc_messages = body::grpc_messages(&message.body, encoding.as_deref(), limits.max_body);
    }
    Some(message)
}

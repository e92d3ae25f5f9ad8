//! Joins the chunks of one `Read`/`Write` call back into one call. BPF splits a call into
//! records of at most 16 KiB; the chunks of one call are produced in order by one program run,
//! but other calls' records may interleave with them in the ring.
//!
//! Must stay true: a single-chunk call (the common case) is passed through without copying or
//! allocating; a call is emitted once; a call with missing bytes is emitted `truncated`, never
//! silently short.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};
use std::time::{Duration, Instant};

use crate::event::Direction;

/// The socket under a `tls.Conn` as BPF resolved it at the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WireConn {
    pub kind: crate::event::ConnKind,
    pub fd: Option<i32>,
    pub local: Option<std::net::SocketAddr>,
    pub remote: Option<std::net::SocketAddr>,
    /// Kernel identity of the socket (0 when unknown); never shown, only compared.
    pub sock_id: u64,
}

impl WireConn {
    /// A connection about which nothing is known.
    pub const UNKNOWN: WireConn =
        WireConn { kind: crate::event::ConnKind::Unknown, fd: None, local: None, remote: None, sock_id: 0 };
}

/// What every chunk of a call repeats about the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallMeta {
    pub call_id: u64,
    pub direction: Direction,
    /// Timestamp as the BPF side took it (the caller converts clocks).
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: [u8; 16],
    /// The `*tls.Conn` address in the traced process.
    pub conn_ptr: u64,
    /// Bytes the call moved.
    pub call_len: u64,
    /// Position of the call among its (process, tls.Conn, direction)'s calls, from 0.
    pub seq: u64,
    /// Which count `seq` belongs to: BPF starts a new one, from 0, when it forgot the stream.
    pub stream_epoch: u32,
    pub conn: WireConn,
    /// The goroutine (g address) that made the call; 0 unless BPF was asked for it (--h2-hooks).
    pub goroutine: u64,
}

impl CallMeta {
    /// The command name up to its first NUL, as names.rs writes names (losslessly escaped:
    /// whoever named the program chose these bytes).
    pub fn comm(&self) -> std::borrow::Cow<'_, str> {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(self.comm.len());
        crate::names::escape_name(&self.comm[..end])
    }
}

/// One ring record's part of a call.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    pub meta: CallMeta,
    /// Where this chunk starts within the call.
    pub offset: u64,
    /// How many bytes of the call this chunk stands for (more than `payload` on a read fault).
    pub span: u64,
    /// The payload bytes could not be read from the traced process; `payload` is empty.
    pub read_fault: bool,
    pub payload: &'a [u8],
}

/// A whole call, ready for the sinks.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub meta: CallMeta,
    /// The captured bytes, in order; all of them unless `truncated`.
    pub data: &'a [u8],
    pub truncated: bool,
}

#[derive(Debug)]
struct Pending {
    meta: CallMeta,
    data: Vec<u8>,
    /// Offset up to which chunks arrived (captured or faulted).
    covered: u64,
    truncated: bool,
    first_seen: Instant,
}

/// Holds calls whose chunks have not all arrived.
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: FxHashMap<u64, Pending>,
    /// Bytes held by `pending`.
    pending_bytes: usize,
    /// Calls emitted before their last chunk came (stale or evicted), newest last: a chunk of
    /// one of these that comes after all is dropped, never the start of a second emission.
    flushed: FxHashSet<u64>,
    flushed_order: VecDeque<u64>,
    /// Chunks dropped because their call was emitted already (counted, shown in the summary).
    pub late_chunks: u64,
    /// Calls emitted truncated to keep within [`MAX_PENDING_CALLS`] and [`MAX_PENDING_BYTES`].
    pub evicted_calls: u64,
    /// Buffers of finished calls, reused so that steady large calls do not allocate.
    spare: Vec<Vec<u8>>,
}

/// Calls still incomplete after this long lost their remaining chunks.
pub const STALE_AFTER: Duration = Duration::from_secs(2);
/// Incomplete calls held at most; past it the oldest goes out truncated. (BPF emits a call's
/// chunks back to back, so only a burst of huge calls from many threads comes near.)
pub const MAX_PENDING_CALLS: usize = 4096;
/// Bytes of incomplete calls held at most (a 256 MiB call is still whole on its own).
pub const MAX_PENDING_BYTES: usize = 256 << 20;
/// Emitted-early calls remembered, to drop their late chunks.
const FLUSHED_REMEMBERED: usize = 65_536;

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls waiting for more chunks.
    pub fn pending_calls(&self) -> usize {
        self.pending.len()
    }

    /// Adds a chunk; calls `emit` when it completes a call (or when holding it would pass the
    /// bounds: then the oldest incomplete calls go out, truncated).
    pub fn push<E>(
        &mut self,
        chunk: Chunk<'_>,
        now: Instant,
        mut emit: impl FnMut(Call<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let end = chunk.offset.saturating_add(chunk.span);
        let last = end >= chunk.meta.call_len;
        if chunk.offset == 0 && last {
            // The whole call in one record: no copy.
            return emit(Call { meta: chunk.meta, data: chunk.payload, truncated: chunk.read_fault });
        }
        if self.flushed.contains(&chunk.meta.call_id) {
            self.late_chunks += 1;
            return Ok(());
        }
        while !self.pending.is_empty()
            && (self.pending_bytes + chunk.payload.len() > MAX_PENDING_BYTES
                || (self.pending.len() >= MAX_PENDING_CALLS && !self.pending.contains_key(&chunk.meta.call_id)))
        {
            self.evict_oldest(&mut emit)?;
        }
        self.pending_bytes += chunk.payload.len();
        let spare = &mut self.spare;
        let pending = self.pending.entry(chunk.meta.call_id).or_insert_with(|| Pending {
            meta: chunk.meta,
            data: spare.pop().unwrap_or_default(),
            covered: 0,
            truncated: false,
            first_seen: now,
        });
        // Chunks of a call arrive in order, so a gap means the ones in between were lost.
        if chunk.read_fault || chunk.offset != pending.covered {
            pending.truncated = true;
        }
        pending.covered = end;
        pending.data.extend_from_slice(chunk.payload);
        if !last {
            return Ok(());
        }
        match self.pending.remove(&chunk.meta.call_id) {
            Some(mut done) => {
                self.pending_bytes -= done.data.len();
                let result = emit(Call { meta: done.meta, data: &done.data, truncated: done.truncated });
                done.data.clear();
                self.spare.push(done.data);
                result
            }
            None => Ok(()),
        }
    }

    /// Emits, as truncated, calls that waited longer than [`STALE_AFTER`] (all of them when
    /// `now` is `None`, at the end of a capture).
    pub fn flush_stale<E>(
        &mut self,
        now: Option<Instant>,
        mut emit: impl FnMut(Call<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let stale: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.is_none_or(|now| now.duration_since(p.first_seen) >= STALE_AFTER))
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            if let Some(done) = self.pending.remove(&id) {
                self.pending_bytes -= done.data.len();
                self.remember_flushed(id);
                emit(Call { meta: done.meta, data: &done.data, truncated: true })?;
            }
        }
        Ok(())
    }

    /// Emits the incomplete call seen first, truncated (the bounds were reached).
    fn evict_oldest<E>(&mut self, emit: &mut impl FnMut(Call<'_>) -> Result<(), E>) -> Result<(), E> {
        let Some(id) = self.pending.iter().min_by_key(|(_, p)| p.first_seen).map(|(&id, _)| id) else {
            return Ok(());
        };
        let Some(done) = self.pending.remove(&id) else { return Ok(()) };
        self.pending_bytes -= done.data.len();
        self.evicted_calls += 1;
        self.remember_flushed(id);
        emit(Call { meta: done.meta, data: &done.data, truncated: true })
    }

    fn remember_flushed(&mut self, id: u64) {
        if self.flushed_order.len() >= FLUSHED_REMEMBERED {
            if let Some(old) = self.flushed_order.pop_front() {
                self.flushed.remove(&old);
            }
        }
        self.flushed.insert(id);
        self.flushed_order.push_back(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(call_id: u64, call_len: u64) -> CallMeta {
        CallMeta {
            call_id,
            direction: Direction::Write,
            ts_ns: 1,
            pid: 2,
            tid: 3,
            uid: 0,
            comm: *b"server\0\0\0\0\0\0\0\0\0\0",
            conn_ptr: 0xc000,
            call_len,
            seq: 0,
            conn: WireConn::UNKNOWN,
            goroutine: 0,
            stream_epoch: 1,
        }
    }

    fn chunk(m: CallMeta, offset: u64, payload: &[u8]) -> Chunk<'_> {
        Chunk { meta: m, offset, span: payload.len() as u64, read_fault: false, payload }
    }

    /// Pushes chunks and returns the emitted calls as (call_id, data, truncated).
    fn run(r: &mut Reassembler, chunks: &[Chunk<'_>]) -> Vec<(u64, Vec<u8>, bool)> {
        let mut out = Vec::new();
        for c in chunks {
            r.push(*c, Instant::now(), |call| {
                out.push((call.meta.call_id, call.data.to_vec(), call.truncated));
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        out
    }

    #[test]
    fn single_chunk_passes_through() {
        let mut r = Reassembler::new();
        let out = run(&mut r, &[chunk(meta(1, 5), 0, b"hello")]);
        assert_eq!(out, vec![(1, b"hello".to_vec(), false)]);
        assert_eq!(r.pending_calls(), 0);
    }

    #[test]
    fn interleaved_calls_are_joined_in_order() {
        let mut r = Reassembler::new();
        let (a, b) = (meta(7, 6), meta(8, 4));
        let out = run(&mut r, &[chunk(a, 0, b"abc"), chunk(b, 0, b"wx"), chunk(a, 3, b"def"), chunk(b, 2, b"yz")]);
        assert_eq!(out, vec![(7, b"abcdef".to_vec(), false), (8, b"wxyz".to_vec(), false)]);
    }

    #[test]
    fn lost_middle_chunk_marks_truncated() {
        let mut r = Reassembler::new();
        let m = meta(1, 9);
        let out = run(&mut r, &[chunk(m, 0, b"abc"), chunk(m, 6, b"ghi")]);
        assert_eq!(out, vec![(1, b"abcghi".to_vec(), true)]);
    }

    #[test]
    fn read_fault_marks_truncated_and_completes() {
        let mut r = Reassembler::new();
        let m = meta(1, 6);
        let fault = Chunk { meta: m, offset: 3, span: 3, read_fault: true, payload: b"" };
        let out = run(&mut r, &[chunk(m, 0, b"abc"), fault]);
        assert_eq!(out, vec![(1, b"abc".to_vec(), true)]);
    }

    #[test]
    fn lost_last_chunk_is_flushed_as_truncated() {
        let mut r = Reassembler::new();
        let m = meta(1, 6);
        assert!(run(&mut r, &[chunk(m, 0, b"abc")]).is_empty());
        let mut out = Vec::new();
        r.flush_stale(None, |c| {
            out.push((c.data.to_vec(), c.truncated));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(out, vec![(b"abc".to_vec(), true)]);
        assert_eq!(r.pending_calls(), 0);
    }

    /// A call flushed as stale whose last chunks come after all is not emitted a second time:
    /// the late chunks are dropped and counted.
    #[test]
    fn chunks_after_a_stale_flush_are_dropped_not_emitted_again() {
        let mut r = Reassembler::new();
        let m = meta(1, 9);
        assert!(run(&mut r, &[chunk(m, 0, b"abc")]).is_empty());
        let mut flushed = 0;
        r.flush_stale(None, |_| {
            flushed += 1;
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(flushed, 1);
        assert!(run(&mut r, &[chunk(m, 3, b"def"), chunk(m, 6, b"ghi")]).is_empty(), "no second emission");
        assert_eq!((r.late_chunks, r.pending_calls()), (2, 0));
    }

    /// Incomplete calls are bounded in number and bytes: past either, the oldest go out
    /// truncated (counted), and their later chunks are dropped.
    #[test]
    fn pending_calls_are_bounded() {
        let mut r = Reassembler::new();
        let first: Vec<Chunk<'_>> = (0..MAX_PENDING_CALLS as u64).map(|id| chunk(meta(id, 2), 0, b"a")).collect();
        assert!(run(&mut r, &first).is_empty());
        let out = run(&mut r, &[chunk(meta(MAX_PENDING_CALLS as u64, 2), 0, b"b")]);
        assert_eq!(out.len(), 1, "the oldest went out");
        assert!(out[0].2, "truncated");
        assert_eq!((r.pending_calls(), r.evicted_calls), (MAX_PENDING_CALLS, 1));
        let evicted = out[0].0;
        assert!(run(&mut r, &[chunk(meta(evicted, 2), 1, b"z")]).is_empty(), "its end is dropped");
        // Bytes: one call as large as the bound pushes out everything held before it.
        let big = vec![7u8; MAX_PENDING_BYTES];
        let out = run(&mut r, &[chunk(meta(u64::MAX, MAX_PENDING_BYTES as u64 + 1), 0, &big)]);
        assert_eq!(out.len(), MAX_PENDING_CALLS);
        assert_eq!(r.pending_calls(), 1);
    }
}

//! Puts calls back in program order. BPF numbers each (process, tls.Conn, direction)'s calls
//! from 0; records of different CPUs can reach the ring in another order, so a call that
//! arrives early is held until the ones before it come, or until [`GAP_TIMEOUT`] says they
//! never will (lost; their loss is counted where it happened).
//!
//! Must stay true: a call that arrives in order (nearly all) is passed through without a copy;
//! only held calls are copied; nothing is held forever.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

use crate::event::Direction;
use crate::reassembly::{Call, CallMeta};

/// How long an early call waits for the ones before it.
pub const GAP_TIMEOUT: Duration = Duration::from_millis(500);
/// Streams idle this long are forgotten (their next call starts a new expectation).
const IDLE_FORGET: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StreamKey {
    pid: u32,
    conn_ptr: u64,
    direction: Direction,
    /// A count BPF restarted (it forgot the stream) is a stream of its own here: its numbers
    /// start at 0 again and must not be mistaken for late calls of the old count.
    epoch: u32,
}

impl StreamKey {
    fn of(meta: &CallMeta) -> Self {
        StreamKey { pid: meta.pid, conn_ptr: meta.conn_ptr, direction: meta.direction, epoch: meta.stream_epoch }
    }
}

#[derive(Debug)]
struct Held {
    meta: CallMeta,
    data: Vec<u8>,
    truncated: bool,
    since: Instant,
}

#[derive(Debug)]
struct Stream {
    next_seq: u64,
    last_seen: Instant,
    held: BTreeMap<u64, Held>,
    /// Nothing emitted yet: a gap before the first call seen may be no loss (a stream idle
    /// past [`IDLE_FORGET`] comes back with a high number), so it is not counted.
    fresh: bool,
}

/// Per-stream reordering buffer.
#[derive(Debug, Default)]
pub struct Sequencer {
    /// Fx, not SipHash: keys are pids and addresses, hashed on every call (SipHash was a
    /// measurable part of the consumer's time under load).
    streams: FxHashMap<StreamKey, Stream>,
    /// Calls released out of order after a gap timed out.
    gaps: u64,
}

impl Sequencer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls released after waiting in vain for an earlier one.
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// Calls currently held.
    pub fn held(&self) -> usize {
        self.streams.values().map(|s| s.held.len()).sum()
    }

    /// Takes a complete call; emits it and any held calls it unblocks, in order.
    pub fn offer<E>(
        &mut self,
        call: Call<'_>,
        now: Instant,
        mut emit: impl FnMut(Call<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let seq = call.meta.seq;
        let stream = self.streams.entry(StreamKey::of(&call.meta)).or_insert_with(|| Stream {
            // BPF numbers every stream from 0 from the moment tlstap loads (its maps start
            // empty), so a first call with a higher number came before an earlier one.
            next_seq: 0,
            last_seen: now,
            held: BTreeMap::new(),
            fresh: true,
        });
        stream.last_seen = now;
        if seq > stream.next_seq {
            stream
                .held
                .insert(seq, Held { meta: call.meta, data: call.data.to_vec(), truncated: call.truncated, since: now });
            return Ok(());
        }
        // seq < next_seq: a call later than the gap timeout (or uncounted, epoch 0): pass it on.
        if seq == stream.next_seq {
            stream.next_seq = seq + 1;
        }
        stream.fresh = false;
        emit(call)?;
        release_ready(stream, &mut emit)
    }

    /// Releases calls whose predecessors did not come within [`GAP_TIMEOUT`] (all held calls
    /// when `now` is None, at the end of a capture) and forgets idle streams.
    pub fn tick<E>(&mut self, now: Option<Instant>, mut emit: impl FnMut(Call<'_>) -> Result<(), E>) -> Result<(), E> {
        for stream in self.streams.values_mut() {
            while let Some((&seq, held)) = stream.held.first_key_value() {
                if now.is_some_and(|now| now.duration_since(held.since) < GAP_TIMEOUT) {
                    break;
                }
                if !stream.fresh {
                    self.gaps += 1;
                }
                stream.fresh = false;
                stream.next_seq = seq;
                release_ready(stream, &mut emit)?;
            }
        }
        if let Some(now) = now {
            self.streams.retain(|_, s| !s.held.is_empty() || now.duration_since(s.last_seen) < IDLE_FORGET);
        }
        Ok(())
    }
}

fn release_ready<E>(stream: &mut Stream, emit: &mut impl FnMut(Call<'_>) -> Result<(), E>) -> Result<(), E> {
    while let Some(held) = stream.held.remove(&stream.next_seq) {
        stream.next_seq += 1;
        emit(Call { meta: held.meta, data: &held.data, truncated: held.truncated })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reassembly::WireConn;

    fn meta(conn_ptr: u64, seq: u64) -> CallMeta {
        CallMeta {
            call_id: seq,
            direction: Direction::Read,
            ts_ns: 0,
            pid: 1,
            tid: 1,
            uid: 0,
            comm: [0; 16],
            conn_ptr,
            call_len: 1,
            seq,
            conn: WireConn::UNKNOWN,
            goroutine: 0,
            stream_epoch: 1,
        }
    }

    fn offer_all(s: &mut Sequencer, calls: &[(u64, u64)], now: Instant, out: &mut Vec<(u64, u64)>) {
        for &(conn, seq) in calls {
            let data = [seq as u8];
            s.offer(Call { meta: meta(conn, seq), data: &data, truncated: false }, now, |c| {
                assert_eq!(c.data, [c.meta.seq as u8]);
                out.push((c.meta.conn_ptr, c.meta.seq));
                Ok::<(), ()>(())
            })
            .unwrap();
        }
    }

    #[test]
    fn reorders_within_a_stream_and_keeps_streams_apart() {
        let mut s = Sequencer::new();
        let mut out = Vec::new();
        let now = Instant::now();
        offer_all(&mut s, &[(1, 0), (1, 2), (2, 0), (1, 3), (1, 1), (2, 1)], now, &mut out);
        assert_eq!(out, vec![(1, 0), (2, 0), (1, 1), (1, 2), (1, 3), (2, 1)]);
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn a_lost_call_releases_the_rest_after_the_timeout() {
        let mut s = Sequencer::new();
        let mut out = Vec::new();
        let now = Instant::now();
        offer_all(&mut s, &[(1, 0), (1, 2), (1, 3)], now, &mut out);
        assert_eq!(out, vec![(1, 0)]);
        let mut emit = |c: Call<'_>| {
            out.push((c.meta.conn_ptr, c.meta.seq));
            Ok::<(), ()>(())
        };
        s.tick(Some(now + GAP_TIMEOUT / 2), &mut emit).unwrap();
        s.tick(Some(now + GAP_TIMEOUT), &mut emit).unwrap();
        assert_eq!(out, vec![(1, 0), (1, 2), (1, 3)]);
        assert_eq!(s.gaps(), 1);
    }

    /// BPF forgot the stream (LRU eviction) and counts again from 0 under a new epoch: the new
    /// count is ordered on its own, its calls never taken for late ones of the old count.
    #[test]
    fn a_restarted_count_is_ordered_on_its_own() {
        let mut s = Sequencer::new();
        let mut out = Vec::new();
        let now = Instant::now();
        offer_all(&mut s, &[(1, 0), (1, 1), (1, 2)], now, &mut out);
        for (seq, epoch) in [(1, 2), (0, 2), (2, 2)] {
            let data = [seq as u8];
            let meta = CallMeta { stream_epoch: epoch, ..meta(1, seq) };
            s.offer(Call { meta, data: &data, truncated: false }, now, |c| {
                out.push((u64::from(c.meta.stream_epoch) * 100, c.meta.seq));
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        assert_eq!(out, vec![(1, 0), (1, 1), (1, 2), (200, 0), (200, 1), (200, 2)]);
        assert_eq!(s.gaps(), 0);
    }

    #[test]
    fn the_first_call_of_a_stream_arriving_late_is_put_first() {
        let mut s = Sequencer::new();
        let mut out = Vec::new();
        offer_all(&mut s, &[(1, 1), (1, 2), (1, 0)], Instant::now(), &mut out);
        assert_eq!(out, vec![(1, 0), (1, 1), (1, 2)]);
    }

    #[test]
    fn a_stream_seen_first_mid_count_waits_once_and_is_no_gap() {
        // E.g. a connection idle past IDLE_FORGET: its next number is high.
        let mut s = Sequencer::new();
        let mut out = Vec::new();
        let now = Instant::now();
        offer_all(&mut s, &[(1, 7), (1, 8)], now, &mut out);
        assert!(out.is_empty());
        s.tick(Some(now + GAP_TIMEOUT), |c| {
            out.push((c.meta.conn_ptr, c.meta.seq));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(out, vec![(1, 7), (1, 8)]);
        assert_eq!(s.gaps(), 0);
        offer_all(&mut s, &[(1, 9)], now, &mut out);
        assert_eq!(out.last(), Some(&(1, 9)), "in order from then on");
    }
}

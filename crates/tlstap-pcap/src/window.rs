//! Packets between the ring buffer and the file: chunks joined into packets ([`Assembler`]),
//! then held in a short reorder window ([`Window`]) and released in time order once they are
//! older than the window (or all of them at the end). The window is what lets packets of all
//! CPUs come out in order, and lets a TLS secret derived just after the packets it decrypts be
//! written before them. Pure: times are CLOCK_MONOTONIC nanoseconds passed in.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use tlstap_bpf::packets::PacketChunk;

/// One whole packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// CLOCK_MONOTONIC, at the TC hook.
    pub ts_ns: u64,
    pub ingress: bool,
    /// Length on the wire.
    pub orig_len: u32,
    pub data: Vec<u8>,
    /// The process of a connect()'s first SYN, when BPF could tell; else 0.
    pub syn_pid: u32,
}

#[derive(Debug)]
struct Partial {
    packet: Packet,
    cap_len: u32,
}

/// Joins chunks (which arrive in order per packet) into packets.
#[derive(Debug, Default)]
pub struct Assembler {
    partial: HashMap<u64, Partial>,
    /// Chunks that did not continue their packet where it stood.
    pub out_of_place: u64,
}

impl Assembler {
    /// Takes a chunk; returns its packet when this chunk completed it.
    pub fn push(&mut self, chunk: &PacketChunk<'_>) -> Option<Packet> {
        if chunk.offset == 0 && chunk.payload.len() == chunk.cap_len as usize {
            let data = chunk.payload.to_vec();
            return Some(Packet {
                ts_ns: chunk.ts_ns,
                ingress: chunk.ingress,
                orig_len: chunk.packet_len,
                data,
                syn_pid: chunk.syn_pid,
            });
        }
        let partial = self.partial.entry(chunk.packet_id).or_insert_with(|| Partial {
            packet: Packet {
                ts_ns: chunk.ts_ns,
                ingress: chunk.ingress,
                orig_len: chunk.packet_len,
                data: Vec::with_capacity(chunk.cap_len as usize),
                syn_pid: chunk.syn_pid,
            },
            cap_len: chunk.cap_len,
        });
        if chunk.offset as usize != partial.packet.data.len() {
            self.out_of_place += 1;
            return None;
        }
        partial.packet.data.extend_from_slice(chunk.payload);
        if partial.packet.data.len() < partial.cap_len as usize {
            return None;
        }
        self.partial.remove(&chunk.packet_id).map(|p| p.packet)
    }

    /// Drops packets whose remaining chunks can no longer come (BPF lost them and counted
    /// them): those begun before `before_ns`. Returns how many.
    pub fn expire(&mut self, before_ns: u64) -> u64 {
        let before = self.partial.len();
        self.partial.retain(|_, p| p.packet.ts_ns >= before_ns);
        (before - self.partial.len()) as u64
    }
}

/// A packet in the window, ordered by (stamp, arrival): equal stamps keep their arrival order.
#[derive(Debug)]
struct Held {
    ts_ns: u64,
    seq: u64,
    packet: Packet,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.ts_ns, self.seq) == (other.ts_ns, other.seq)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts_ns, self.seq).cmp(&(other.ts_ns, other.seq))
    }
}

/// The reorder window.
#[derive(Debug)]
pub struct Window {
    heap: BinaryHeap<Reverse<Held>>,
    seq: u64,
    bytes: usize,
    hold_ns: u64,
    max_bytes: usize,
}

impl Window {
    /// Holds each packet `hold_ns`, or less while more than `max_bytes` are held.
    pub fn new(hold_ns: u64, max_bytes: usize) -> Window {
        Window { heap: BinaryHeap::new(), seq: 0, bytes: 0, hold_ns, max_bytes }
    }

    pub fn push(&mut self, packet: Packet) {
        self.bytes += packet.data.len();
        self.seq += 1;
        self.heap.push(Reverse(Held { ts_ns: packet.ts_ns, seq: self.seq, packet }));
    }

    /// The oldest packet, if it is due at `now_ns` (None: everything is due).
    pub fn pop_due(&mut self, now_ns: Option<u64>) -> Option<Packet> {
        let Reverse(oldest) = self.heap.peek()?;
        let due = match now_ns {
            None => true,
            Some(now) => oldest.ts_ns.saturating_add(self.hold_ns) <= now || self.bytes > self.max_bytes,
        };
        if !due {
            return None;
        }
        let Reverse(held) = self.heap.pop()?;
        self.bytes -= held.packet.data.len();
        Some(held.packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(id: u64, ts: u64, off: u32, payload: &[u8], cap: u32) -> PacketChunk<'_> {
        PacketChunk {
            ts_ns: ts,
            packet_id: id,
            ingress: false,
            packet_len: cap + 2,
            cap_len: cap,
            offset: off,
            payload,
            syn_pid: 0,
        }
    }

    #[test]
    fn joins_chunks_and_expires_unfinished_packets() {
        let mut a = Assembler::default();
        let whole = a.push(&chunk(1, 5, 0, b"abc", 3)).unwrap();
        assert_eq!((whole.data.as_slice(), whole.orig_len, whole.ts_ns), (&b"abc"[..], 5, 5));
        assert_eq!(a.push(&chunk(2, 6, 0, b"ab", 5)), None);
        assert_eq!(a.push(&chunk(3, 7, 0, b"xy", 4)), None, "interleaved with another packet");
        assert_eq!(a.push(&chunk(2, 6, 2, b"cde", 5)).unwrap().data, b"abcde");
        assert_eq!(a.push(&chunk(3, 7, 3, b"z", 4)), None, "a chunk was lost");
        assert_eq!(a.out_of_place, 1);
        assert_eq!(a.expire(7), 0);
        assert_eq!(a.expire(8), 1);
    }

    fn packet(ts: u64, tag: u8) -> Packet {
        Packet { ts_ns: ts, ingress: false, orig_len: 1, data: vec![tag], syn_pid: 0 }
    }

    #[test]
    fn releases_in_time_order_after_the_hold() {
        let mut w = Window::new(100, 1 << 20);
        for (ts, tag) in [(30, b'c'), (10, b'a'), (20, b'b'), (20, b'B')] {
            w.push(packet(ts, tag));
        }
        assert_eq!(w.pop_due(Some(109)), None, "nothing is 100 old yet");
        assert_eq!(w.pop_due(Some(110)).unwrap().data, b"a");
        assert_eq!(w.pop_due(Some(120)).unwrap().data, b"b", "equal stamps keep arrival order");
        assert_eq!(w.pop_due(Some(120)).unwrap().data, b"B");
        assert_eq!(w.pop_due(Some(120)), None);
        assert_eq!(w.pop_due(None).unwrap().data, b"c", "the end releases everything");
        assert_eq!(w.pop_due(None), None);
    }

    #[test]
    fn a_full_window_releases_early() {
        let mut w = Window::new(1_000_000, 2);
        w.push(packet(1, b'a'));
        w.push(packet(2, b'b'));
        assert_eq!(w.pop_due(Some(3)), None);
        w.push(packet(3, b'c'));
        assert_eq!(w.pop_due(Some(3)).unwrap().data, b"a");
        assert_eq!(w.pop_due(Some(3)), None);
    }
}

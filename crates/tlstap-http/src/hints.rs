//! Header fields straight from a Go program (tlstap's --h2-hooks), used where the wire's HPACK
//! state was missed: on connections opened before tlstap started, a partial decoder cannot
//! know the dynamic-table entries indexed in a block. These fields fill exactly those, and only
//! when they provably belong to the block:
//!
//! - **Received** blocks: Go's framer reports each block's fields with its connection (the
//!   goroutine that read it) and stream; the n-th report of a stream is its n-th block.
//! - **Sent** fields: Go's HPACK encoder reports each field it is given, one at a time, tagged
//!   with the encoder (one per connection) but not with the connection: whichever goroutine
//!   encodes is not always the one that writes. A written block of n fields is matched to an
//!   encoder whose next n fields agree with every part of the block the wire did decode; a
//!   connection is then bound to that encoder and takes its fields in order. A match must be
//!   unique among unbound encoders and informative (a field known whole), so two look-alike
//!   queues never guess.
//!
//! What must stay true: a field is filled only from a report whose field count equals the
//! block's and whose every decoded part agrees; anything else leaves the field undecodable.

use std::collections::VecDeque;

use rustc_hash::{FxHashMap, FxHashSet};
use tlstap_core::http::Header;

/// One field as the program had it: (name, value).
pub type GoField = (Vec<u8>, Vec<u8>);

/// Fields queued per encoder at most (older ones are dropped; a bound connection then stops
/// agreeing and is unbound). A queue is drained block by block as its connection's bytes are
/// decoded, so it holds what one flush encodes: tens of fields.
const MAX_QUEUED: usize = 512;
/// Encoders tracked at most (all are forgotten past this; they rebind on their next block).
const MAX_ENCODERS: usize = 1024;
/// Bytes of queued names and values at most (fields are up to 8 KiB): past it every queue is
/// forgotten, as past MAX_ENCODERS.
const MAX_BYTES: usize = 32 << 20;

fn size(field: &Option<GoField>) -> usize {
    field.as_ref().map_or(0, |(n, v)| n.len() + v.len())
}

/// Sent fields of every hooked process, by (process, encoder).
#[derive(Debug, Default)]
pub struct SentFields {
    /// `None` stands for a field the hook could not capture whole (it still takes its place).
    queues: FxHashMap<(u32, u64), VecDeque<Option<GoField>>>,
    /// Encoders a connection is bound to (not offered to other connections).
    bound: FxHashSet<(u32, u64)>,
    /// Bytes held in `queues`.
    bytes: usize,
}

impl SentFields {
    /// A field the program's encoder `encoder` was given, in order.
    pub fn push(&mut self, process: u32, encoder: u64, field: Option<GoField>) {
        let new_encoder = !self.queues.contains_key(&(process, encoder));
        if (self.queues.len() >= MAX_ENCODERS && new_encoder) || self.bytes + size(&field) > MAX_BYTES {
            self.queues.clear();
            self.bound.clear();
            self.bytes = 0;
        }
        let queue = self.queues.entry((process, encoder)).or_default();
        if queue.len() >= MAX_QUEUED {
            if let Some(old) = queue.pop_front() {
                self.bytes -= size(&old);
            }
        }
        self.bytes += size(&field);
        queue.push_back(field);
    }

    /// Takes the first `n` fields of the queue at `key` (which holds at least `n`).
    fn drain(&mut self, key: (u32, u64), n: usize) -> Option<Vec<Option<GoField>>> {
        let fields: Vec<_> = self.queues.get_mut(&key)?.drain(..n).collect();
        self.bytes -= fields.iter().map(size).sum::<usize>();
        Some(fields)
    }

    /// The program's fields of a block it wrote, decoded from the wire as `decoded`, taken from
    /// the encoder `bound` names (binding one if a unique encoder matches). `None` (and the
    /// binding dropped) when no encoder provably encoded this block.
    pub fn take_block(
        &mut self,
        process: u32,
        bound: &mut Option<u64>,
        decoded: &[Header],
    ) -> Option<Vec<Option<GoField>>> {
        let n = decoded.len();
        if let Some(encoder) = *bound {
            let queue = self.queues.get(&(process, encoder));
            if queue.is_some_and(|q| q.len() >= n && agrees(decoded, q.iter().take(n))) {
                return self.drain((process, encoder), n);
            }
            self.bound.remove(&(process, encoder));
            *bound = None;
        }
        if !decoded.iter().any(Header::is_complete) {
            return None;
        }
        let mut candidates = self.queues.iter().filter(|(key, queue)| {
            key.0 == process && !self.bound.contains(key) && queue.len() >= n && agrees(decoded, queue.iter().take(n))
        });
        let (&key, _) = candidates.next()?;
        if candidates.next().is_some() {
            return None;
        }
        self.bound.insert(key);
        *bound = Some(key.1);
        self.drain(key, n)
    }

    /// A connection bound to `encoder` ended: the encoder is free for matching again.
    pub fn release(&mut self, process: u32, encoder: u64) {
        self.bound.remove(&(process, encoder));
        if let Some(queue) = self.queues.remove(&(process, encoder)) {
            self.bytes -= queue.iter().map(size).sum::<usize>();
        }
    }
}

/// Whether every part of `decoded` the wire decoded equals the program's field there (a field
/// the hook could not capture agrees with anything, but fills nothing).
fn agrees<'a>(decoded: &[Header], program: impl Iterator<Item = &'a Option<GoField>>) -> bool {
    decoded.iter().zip(program).all(|(h, field)| match field {
        None => true,
        Some((name, value)) => {
            h.name.as_deref().is_none_or(|n| n == name.as_slice())
                && h.value.as_deref().is_none_or(|v| v == value.as_slice())
        }
    })
}

/// Fills the undecodable parts of `decoded` from the program's fields of the same block; false
/// (and nothing changed) unless the counts are equal and every decoded part agrees.
pub fn fill(decoded: &mut [Header], program: &[Option<GoField>]) -> bool {
    if decoded.len() != program.len() || !agrees(decoded, program.iter()) {
        return false;
    }
    for (h, field) in decoded.iter_mut().zip(program) {
        if let Some((name, value)) = field {
            h.name.get_or_insert_with(|| name.clone());
            h.value.get_or_insert_with(|| value.clone());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(n: &str, v: &str) -> Header {
        Header::new(n, v)
    }
    fn unknown() -> Header {
        Header { name: None, value: None }
    }
    fn go(n: &str, v: &str) -> Option<GoField> {
        Some((n.into(), v.into()))
    }

    #[test]
    fn fill_needs_equal_counts_and_agreement() {
        let mut block = vec![known(":status", "200"), unknown(), Header { name: Some(b"date".to_vec()), value: None }];
        let program = [go(":status", "200"), go("content-type", "text/plain"), go("date", "Mon")];
        assert!(!fill(&mut block.clone(), &program[..2]), "count differs");
        assert!(!fill(&mut block.clone(), &[go(":status", "404"), program[1].clone(), program[2].clone()]));
        assert!(!fill(&mut block.clone(), &[program[0].clone(), program[1].clone(), go("server", "Mon")]));
        assert!(fill(&mut block, &program));
        assert_eq!(block, vec![known(":status", "200"), known("content-type", "text/plain"), known("date", "Mon")]);
    }

    #[test]
    fn an_uncaptured_field_stays_undecodable() {
        let mut block = vec![known(":status", "200"), unknown()];
        assert!(fill(&mut block, &[go(":status", "200"), None]));
        assert_eq!(block[1], unknown());
    }

    #[test]
    fn sent_blocks_bind_to_the_one_agreeing_encoder_then_follow_it() {
        let mut sent = SentFields::default();
        for f in [go(":status", "200"), go("content-type", "a"), go(":status", "200"), go("content-type", "b")] {
            sent.push(1, 0xA, f);
        }
        for f in [go(":status", "404"), go("content-type", "c")] {
            sent.push(1, 0xB, f);
        }
        sent.push(2, 0xC, go(":status", "200")); // another process: never a candidate
        let mut bound = None;
        let block = [known(":status", "200"), unknown()];
        let got = sent.take_block(1, &mut bound, &block).unwrap();
        assert_eq!((bound, got), (Some(0xA), vec![go(":status", "200"), go("content-type", "a")]));
        // Bound: the next block comes from the same queue, in order.
        assert_eq!(sent.take_block(1, &mut bound, &block).unwrap()[1], go("content-type", "b"));
        // Queue empty: no guess from another encoder while bound... and unbound after.
        assert_eq!(sent.take_block(1, &mut bound, &block), None);
        assert_eq!(bound, None);
    }

    #[test]
    fn look_alike_encoders_are_never_guessed_between() {
        let mut sent = SentFields::default();
        sent.push(1, 0xA, go(":status", "200"));
        sent.push(1, 0xA, go("content-type", "a"));
        sent.push(1, 0xB, go(":status", "200"));
        sent.push(1, 0xB, go("content-type", "b"));
        let mut bound = None;
        assert_eq!(sent.take_block(1, &mut bound, &[known(":status", "200"), unknown()]), None);
        // Nothing known in the block: nothing to match on, even with one encoder.
        let mut only = SentFields::default();
        only.push(1, 0xA, go("x", "y"));
        assert_eq!(only.take_block(1, &mut bound, &[unknown()]), None);
    }

    /// Queued bytes are bounded: past the bound every queue is forgotten (the count restarts).
    #[test]
    fn queued_bytes_are_bounded() {
        let mut sent = SentFields::default();
        let big = "v".repeat(8000);
        for i in 0..(MAX_BYTES / 8000 + 10) as u64 {
            sent.push(1, i % 100, go("n", &big));
            assert!(sent.bytes <= MAX_BYTES);
        }
        let held: usize = sent.queues.values().flatten().map(size).sum();
        assert_eq!(held, sent.bytes, "the count matches what is held");
        let mut bound = None;
        sent.push(1, 7777, go(":status", "200"));
        assert!(sent.take_block(1, &mut bound, &[Header::new(":status", "200")]).is_some());
        let held: usize = sent.queues.values().flatten().map(size).sum();
        assert_eq!(held, sent.bytes, "and after a drain");
    }
}

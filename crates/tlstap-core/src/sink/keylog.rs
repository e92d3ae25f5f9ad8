//! NSS key log output (the `SSLKEYLOGFILE` format Wireshark and curl use): one
//! `LABEL CLIENT_RANDOM_HEX SECRET_HEX` line per distinct secret, nothing else.
//! Must stay true: every line is complete and flushed on its own (readers tail the file); a line
//! is never written twice while it is remembered; a label that is not an NSS token
//! (`[A-Z0-9_]+`) is never written, so a corrupt event cannot inject lines.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Write};
use std::sync::Arc;

use super::Sink;
use crate::event::{Event, SecretEvent};
use crate::hex::push_hex;

/// How many distinct lines a sink remembers for deduplication by default. A TLS 1.3 connection
/// gives four lines (~200 bytes each), so this is the last ~4000 connections in ~3 MiB.
pub const DEFAULT_REMEMBERED_LINES: usize = 16 * 1024;

/// Longest label accepted; the longest NSS label today is 31 bytes.
const MAX_LABEL_LEN: usize = 64;

/// True for an NSS key log label: 1 to 64 of `A-Z`, `0-9` and `_`.
pub(crate) fn is_nss_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Renders `ev` as one key log line (with its `\n`) into `line`, replacing its contents.
/// Returns false, leaving `line` empty, when the event cannot be a key log line: a label that
/// is not an NSS token, or an empty client random or secret.
pub(crate) fn render_nss_line(line: &mut Vec<u8>, ev: &SecretEvent<'_>) -> bool {
    line.clear();
    if !is_nss_label(ev.label) || ev.client_random.is_empty() || ev.secret.is_empty() {
        return false;
    }
    line.extend_from_slice(ev.label.as_bytes());
    line.push(b' ');
    push_hex(line, ev.client_random);
    line.push(b' ');
    push_hex(line, ev.secret);
    line.push(b'\n');
    true
}

/// The most recent distinct lines, forgotten oldest first once `capacity` is reached. A
/// forgotten line that comes again is written again: harmless, as key log readers ignore
/// repeated lines, and it keeps memory bounded however long a capture runs.
#[derive(Debug)]
pub(crate) struct RecentLines {
    set: HashSet<Arc<[u8]>>,
    order: VecDeque<Arc<[u8]>>,
    capacity: usize,
}

impl RecentLines {
    pub(crate) fn new(capacity: usize) -> Self {
        RecentLines { set: HashSet::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    pub(crate) fn contains(&self, line: &[u8]) -> bool {
        self.set.contains(line)
    }

    /// Remembers `line` (which must not be remembered yet), forgetting the oldest if full.
    pub(crate) fn remember(&mut self, line: &[u8]) {
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        let line: Arc<[u8]> = Arc::from(line);
        self.set.insert(Arc::clone(&line));
        self.order.push_back(line);
    }
}

/// Secret events as NSS key log lines, each distinct line once: what the key log and pcapng
/// sinks share. A line counts as written only after [`SecretLines::written`], so a failed
/// write is retried with the next copy of the secret.
#[derive(Debug)]
pub(crate) struct SecretLines {
    seen: RecentLines,
    /// Reused for every line.
    line: Vec<u8>,
    skipped: u64,
}

impl SecretLines {
    pub(crate) fn new(remembered: usize) -> Self {
        SecretLines { seen: RecentLines::new(remembered), line: Vec::with_capacity(256), skipped: 0 }
    }

    /// The line of `event` if it is a secret not written yet.
    pub(crate) fn fresh(&mut self, event: &Event<'_>) -> Option<&[u8]> {
        let Event::Secret(secret) = event else { return None };
        if !render_nss_line(&mut self.line, secret) {
            self.skipped += 1;
            return None;
        }
        (!self.seen.contains(&self.line)).then_some(self.line.as_slice())
    }

    /// The line [`SecretLines::fresh`] returned reached its file.
    pub(crate) fn written(&mut self) {
        self.seen.remember(&self.line);
    }

    /// Secret events that could not be written as key log lines (bad label, empty fields).
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Writes each distinct [`Event::Secret`] as a key log line, then flushes; ignores the rest.
/// Give it an unbuffered `File` (opened with [`crate::secret_file::open_secret_file`]) so each
/// line reaches the file in one `write`.
#[derive(Debug)]
pub struct KeylogSink<W: Write> {
    out: W,
    lines: SecretLines,
}

impl<W: Write> KeylogSink<W> {
    /// A sink remembering [`DEFAULT_REMEMBERED_LINES`] lines for deduplication.
    pub fn new(out: W) -> Self {
        Self::with_memory(out, DEFAULT_REMEMBERED_LINES)
    }

    /// A sink remembering the last `lines` distinct lines (at least one).
    pub fn with_memory(out: W, lines: usize) -> Self {
        KeylogSink { out, lines: SecretLines::new(lines) }
    }

    /// Secret events that could not be written as key log lines (bad label, empty fields).
    pub fn skipped(&self) -> u64 {
        self.lines.skipped()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Sink for KeylogSink<W> {
    fn write_event(&mut self, event: &Event<'_>) -> io::Result<()> {
        let Some(line) = self.lines.fresh(event) else { return Ok(()) };
        self.out.write_all(line)?;
        self.out.flush()?;
        self.lines.written();
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret<'a>(label: &'a str, cr: &'a [u8], s: &'a [u8]) -> Event<'a> {
        Event::Secret(SecretEvent { ts_ns: 1, pid: 2, label, client_random: cr, secret: s })
    }

    #[test]
    fn labels() {
        assert!(is_nss_label("CLIENT_TRAFFIC_SECRET_0"));
        for bad in ["", "client_random", "A B", "X\nY", &"A".repeat(65)] {
            assert!(!is_nss_label(bad), "{bad:?}");
        }
    }

    #[test]
    fn forgets_oldest_when_full() {
        let mut r = RecentLines::new(2);
        r.remember(b"a");
        r.remember(b"b");
        r.remember(b"c");
        assert!(!r.contains(b"a"));
        assert!(r.contains(b"b") && r.contains(b"c"));
    }

    #[test]
    fn bounded_memory_rewrites_forgotten_line() {
        let mut sink = KeylogSink::with_memory(Vec::new(), 1);
        for label in ["A", "B", "A", "A"] {
            sink.write_event(&secret(label, &[1], &[2])).unwrap();
        }
        assert_eq!(String::from_utf8(sink.into_inner()).unwrap(), "A 01 02\nB 01 02\nA 01 02\n");
    }

    #[test]
    fn skips_unwritable_secrets() {
        let mut sink = KeylogSink::new(Vec::new());
        sink.write_event(&secret("BAD LABEL", &[1], &[2])).unwrap();
        sink.write_event(&secret("CLIENT_RANDOM", &[], &[2])).unwrap();
        sink.write_event(&secret("CLIENT_RANDOM", &[1], &[])).unwrap();
        assert_eq!(sink.skipped(), 3);
        assert!(sink.into_inner().is_empty());
    }
}

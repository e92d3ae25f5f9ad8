//! pcapng output: packets the caller captured, with every distinct TLS secret written as a
//! Decryption Secrets Block as soon as it arrives, so Wireshark decrypts the packets after it.
//! Must stay true: a secret's block is written before any packet passed in after its event;
//! plaintext data events are not packets and are ignored here (text/jsonl render them).

use std::io::{self, Write};

use super::keylog::{SecretLines, DEFAULT_REMEMBERED_LINES};
use super::Sink;
use crate::event::Event;
use crate::pcapng::{PcapngWriter, USER_APPL};

/// A [`PcapngWriter`] that also takes [`Event::Secret`]s. The caller keeps packets in time order
/// and passes each secret event before the packets that need it.
#[derive(Debug)]
pub struct PcapngSink<W: Write> {
    writer: PcapngWriter<W>,
    lines: SecretLines,
}

impl<W: Write> PcapngSink<W> {
    /// Writes the section header, `shb_userappl` = [`USER_APPL`] ("tlstap" and the version).
    pub fn new(out: W) -> io::Result<Self> {
        Ok(PcapngSink { writer: PcapngWriter::new(out, USER_APPL)?, lines: SecretLines::new(DEFAULT_REMEMBERED_LINES) })
    }

    /// See [`PcapngWriter::add_interface`].
    pub fn add_interface(&mut self, linktype: u16, name: &str) -> io::Result<u32> {
        self.writer.add_interface(linktype, name)
    }

    /// See [`PcapngWriter::write_packet`].
    pub fn write_packet(
        &mut self,
        if_id: u32,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        comment: Option<&str>,
    ) -> io::Result<()> {
        self.writer.write_packet(if_id, ts_ns, data, orig_len, comment)
    }

    /// Secret events that could not be written as key log lines (bad label, empty fields).
    pub fn skipped(&self) -> u64 {
        self.lines.skipped()
    }

    pub fn into_inner(self) -> W {
        self.writer.into_inner()
    }
}

impl<W: Write> Sink for PcapngSink<W> {
    fn write_event(&mut self, event: &Event<'_>) -> io::Result<()> {
        let Some(line) = self.lines.fresh(event) else { return Ok(()) };
        self.writer.write_secrets(line)?;
        self.lines.written();
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

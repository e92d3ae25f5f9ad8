//! Human-readable output: one header line per event, then the payload (as text when it is
//! printable, else as a hex dump; always a hex dump in [`PayloadStyle::Hex`]). Secrets are one
//! line each; every record ends with a blank line.

use std::io::{self, Write};

use super::hexdump::push_hexdump;
use super::http_text::push_exchange;
use super::keylog::is_nss_label;
use super::{push_addr, push_decimal, Rfc3339Cache, Sink};
use crate::event::{DataEvent, Event, SecretEvent};
use crate::hex::push_hex;
use crate::names::escape_path;

/// How payload bytes are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadStyle {
    /// Printable payloads as they are, others as a hex dump.
    Auto,
    /// Always a hex dump.
    Hex,
}

#[derive(Debug)]
pub struct TextSink<W: Write> {
    out: W,
    style: PayloadStyle,
    /// Reused for each data event's header line and each secret's line.
    line: Vec<u8>,
    clock: Rfc3339Cache,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W, style: PayloadStyle) -> Self {
        TextSink { out, style, line: Vec::new(), clock: Rfc3339Cache::default() }
    }

    /// `<time> pid=N secret LABEL CLIENT_RANDOM_HEX SECRET_HEX`, then a blank line. A label
    /// that is not an NSS label token is shown quoted and escaped, so it cannot forge lines.
    fn write_secret(&mut self, ev: &SecretEvent<'_>) -> io::Result<()> {
        let line = &mut self.line;
        line.clear();
        self.clock.push(line, ev.ts_ns);
        line.extend_from_slice(b" pid=");
        push_decimal(line, ev.pid);
        line.extend_from_slice(b" secret ");
        if is_nss_label(ev.label) {
            line.extend_from_slice(ev.label.as_bytes());
        } else {
            write!(line, "{:?}", ev.label)?;
        }
        line.push(b' ');
        push_hex(line, ev.client_random);
        line.push(b' ');
        push_hex(line, ev.secret);
        line.extend_from_slice(b"\n\n");
        self.out.write_all(line)
    }

    /// The header line is assembled in a reused buffer and written once: going through
    /// `write!` for each field was most of the text sink's time under load (bench: perf
    /// profile of tlstap).
    fn write_data(&mut self, ev: &DataEvent<'_>) -> io::Result<()> {
        let line = &mut self.line;
        line.clear();
        self.clock.push(line, ev.ts_ns);
        line.extend_from_slice(b" pid=");
        push_decimal(line, ev.pid);
        line.extend_from_slice(b" tid=");
        push_decimal(line, ev.tid);
        line.extend_from_slice(b" comm=");
        line.extend_from_slice(ev.comm.as_bytes());
        line.push(b' ');
        line.extend_from_slice(ev.direction.as_str().as_bytes());
        line.extend_from_slice(b" len=");
        push_decimal(line, ev.len);
        if ev.truncated {
            line.extend_from_slice(b" captured=");
            push_decimal(line, ev.data.len());
            line.extend_from_slice(b" TRUNCATED");
        }
        if let Some(conn) = ev.conn {
            line.push(b' ');
            push_addr(line, conn.local.as_ref());
            line.extend_from_slice(b" -> ");
            push_addr(line, conn.remote.as_ref());
        }
        line.push(b'\n');
        if self.style == PayloadStyle::Auto && is_printable(ev.data) {
            self.out.write_all(line)?;
            self.out.write_all(ev.data)?;
            if !ev.data.ends_with(b"\n") {
                self.out.write_all(b"\n")?;
            }
            self.out.write_all(b"\n")
        } else {
            push_hexdump(line, ev.data);
            line.push(b'\n');
            self.out.write_all(line)
        }
    }
}

/// UTF-8 text without control characters other than tab, CR and LF. The ASCII part (all of
/// it, for HTTP heads) is checked byte by byte in one pass; what follows the first non-ASCII
/// byte goes through the UTF-8 decoder.
pub(crate) fn is_printable(data: &[u8]) -> bool {
    let allowed = |c: char| !c.is_control() || matches!(c, '\t' | '\r' | '\n');
    let stops = |b: u8| !b.is_ascii() || (b.is_ascii_control() && !matches!(b, b'\t' | b'\r' | b'\n'));
    let ascii = data.iter().position(|&b| stops(b)).unwrap_or(data.len());
    match data.get(ascii) {
        None => true,
        Some(b) if b.is_ascii() => false,
        Some(_) => std::str::from_utf8(&data[ascii..]).is_ok_and(|s| s.chars().all(allowed)),
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn write_event(&mut self, event: &Event<'_>) -> io::Result<()> {
        match event {
            Event::Data(ev) => self.write_data(ev),
            Event::Secret(ev) => self.write_secret(ev),
            Event::Http(ev) => {
                self.line.clear();
                push_exchange(&mut self.line, ev, self.style, &mut self.clock);
                self.out.write_all(&self.line)
            }
            Event::Attach(a) => writeln!(
                self.out,
                "# attached {} ({}, {} ABI, {} probes)\n",
                escape_path(a.binary),
                a.go_version,
                a.abi,
                a.probes
            ),
            Event::Detach { binary } => writeln!(self.out, "# detached {}\n", escape_path(binary)),
            // The summary and the ready line go to stderr from the caller; the text stream
            // stays payload.
            Event::Stats(_) | Event::Ready { .. } => Ok(()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, as plainly as it can be written.
    fn reference(data: &[u8]) -> bool {
        std::str::from_utf8(data).is_ok_and(|s| s.chars().all(|c| !c.is_control() || matches!(c, '\t' | '\r' | '\n')))
    }

    #[test]
    fn printable_is_utf8_without_controls_but_tab_cr_lf() {
        let cases: [&[u8]; 14] = [
            b"",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"tab\there",
            b"bell\x07",
            b"del\x7f",
            b"\x00",
            "caf\u{e9} \u{65e5}\u{672c}".as_bytes(),
            "text then C1 \u{85}".as_bytes(),
            "\u{e9}\n\u{9f}".as_bytes(),
            b"ascii then invalid \xff",
            b"\xc3",
            b"\xc3\xa9 ok",
            b"ok \xe2\x82",
            &[0x41; 300],
        ];
        for data in cases {
            assert_eq!(is_printable(data), reference(data), "{data:?}");
        }
    }
}

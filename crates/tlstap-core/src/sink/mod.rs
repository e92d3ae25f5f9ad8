//! Every output of tlstap is a [`Sink`]: one trait, one implementation per format, each generic
//! over `io::Write` so tests render into a `Vec<u8>` and compare with golden files.

use std::io;

use crate::event::Event;

mod ascii;
mod hexdump;
mod http_json;
mod http_text;
mod json;
mod jsonl;
mod keylog;
mod pcapng;
mod text;

pub use jsonl::JsonlSink;
pub use keylog::{KeylogSink, DEFAULT_REMEMBERED_LINES};
pub use pcapng::PcapngSink;
pub use text::{PayloadStyle, TextSink};

/// Renders events. Implementations buffer as they like but must not lose an event that
/// `write_event` accepted once `flush` has returned.
pub trait Sink {
    fn write_event(&mut self, event: &Event<'_>) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn write_event(&mut self, event: &Event<'_>) -> io::Result<()> {
        (**self).write_event(event)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}

/// Renders wall-clock nanoseconds since the epoch as RFC 3339 UTC with nanoseconds, reusing
/// the date and time part while consecutive events fall in the same second (nearly always,
/// under load).
#[derive(Debug, Default)]
pub(crate) struct Rfc3339Cache {
    second: Option<u64>,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    prefix: Vec<u8>,
}

impl Rfc3339Cache {
    /// Appends `ts_ns` as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` to `out`.
    pub(crate) fn push(&mut self, out: &mut Vec<u8>, ts_ns: u64) {
        let (second, nanos) = (ts_ns / 1_000_000_000, ts_ns % 1_000_000_000);
        if self.second != Some(second) {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(second);
            let text = humantime::format_rfc3339_seconds(t).to_string();
            self.prefix.clear();
            self.prefix.extend_from_slice(text.trim_end_matches('Z').as_bytes());
            self.second = Some(second);
        }
        out.extend_from_slice(&self.prefix);
        out.push(b'.');
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(nanos).as_bytes();
        out.extend(std::iter::repeat_n(b'0', 9 - digits.len()));
        out.extend_from_slice(digits);
        out.push(b'Z');
    }
}

/// Appends the decimal form of `n` to `out`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends a connection's address as sinks write it: `ip:port` (`[v6]:port`), `?` when unknown.
/// Exactly `SocketAddr`'s `Display`; IPv4 (every address of a local benchmark, most of any
/// capture) is written digit by digit, as `core::fmt` took a tenth of the HTTP text view's time.
pub(crate) fn push_addr(out: &mut Vec<u8>, addr: Option<&std::net::SocketAddr>) {
    use std::io::Write as _;
    match addr {
        Some(std::net::SocketAddr::V4(v4)) => {
            let [a, b, c, d] = v4.ip().octets();
            push_decimal(out, a);
            for octet in [b, c, d] {
                out.push(b'.');
                push_decimal(out, octet);
            }
            out.push(b':');
            push_decimal(out, v4.port());
        }
        // Writing into a Vec cannot fail.
        Some(addr) => {
            let _ = write!(out, "{addr}");
        }
        None => out.push(b'?'),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// humantime's own rendering, the reference.
    fn rfc3339(ts_ns: u64) -> humantime::Rfc3339Timestamp {
        humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ts_ns))
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut cases: Vec<std::net::SocketAddr> = [
            "0.0.0.0:0",
            "127.0.0.1:443",
            "255.255.255.255:65535",
            "10.0.100.9:8080",
            "[::1]:50000",
            "[fe80::1%3]:443",
            "[::ffff:1.2.3.4]:5",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let mut x: u64 = 1;
        for _ in 0..2000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let ip = std::net::Ipv4Addr::from((x >> 32) as u32 >> (x % 24));
            cases.push(std::net::SocketAddr::new(ip.into(), (x >> 8) as u16 >> (x % 16)));
        }
        for addr in cases {
            let mut out = Vec::new();
            push_addr(&mut out, Some(&addr));
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
        let mut out = Vec::new();
        push_addr(&mut out, None);
        assert_eq!(out, b"?");
    }

    #[test]
    fn cached_timestamps_match_humantime() {
        let mut cache = Rfc3339Cache::default();
        for ts in [
            0,
            1,
            999_999_999,
            1_000_000_000,
            1_795_768_778_137_571_768,
            1_795_768_778_900_000_000,
            1_795_768_779_000_000_001,
        ] {
            let mut out = Vec::new();
            cache.push(&mut out, ts);
            assert_eq!(String::from_utf8(out).unwrap(), rfc3339(ts).to_string(), "{ts}");
        }
    }
}

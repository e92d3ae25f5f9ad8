//! Every output of tlstap is a [`Sink`]: one trait, one implementation per format, each generic
//! over `io::Write` so tests render into a `Vec<u8>` and compare with golden files.

use std::io;

use crate::event::Event;

mod hexdump;
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

/// Wall-clock nanoseconds since the epoch as RFC 3339 UTC with nanoseconds.
pub(crate) fn rfc3339(ts_ns: u64) -> humantime::Rfc3339Timestamp {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ts_ns);
    humantime::format_rfc3339_nanos(t)
}

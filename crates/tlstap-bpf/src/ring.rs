//! Reading a BPF ring buffer (or, on kernels without one, per-CPU perf buffers) through a
//! callback: the one place outside this crate's loaders where userspace meets libbpf's ring
//! API, so the crates above never depend on libbpf-rs.
//!
//! Must stay true: a wait cut short by a signal is not an error (Ctrl-C is how captures end);
//! the map's descriptor lives as long as the reader.

use std::io;
use std::time::Duration;

use libbpf_rs::{ErrorKind, MapCore, MapHandle, MapImpl, PerfBuffer, PerfBufferBuilder, RingBuffer, RingBufferBuilder};

/// Reads records of one ring buffer map, calling `callback` for each: 0 goes on, a negative
/// value stops the current read early (the records after it stay for the next one; perf
/// buffers cannot stop early: the callback sees the rest too).
pub struct RingReader<'cb> {
    source: Source<'cb>,
}

enum Source<'cb> {
    Ring {
        ring: RingBuffer<'cb>,
        /// The map's own descriptor, kept open while the ring is read.
        _map: MapHandle,
    },
    Perf(PerfBuffer<'cb>),
}

impl std::fmt::Debug for RingReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReader").finish_non_exhaustive()
    }
}

impl<'cb> RingReader<'cb> {
    /// A reader of `map` (a BPF_MAP_TYPE_RINGBUF of one of this crate's objects).
    pub(crate) fn new<T: std::fmt::Debug>(
        map: &MapImpl<'_, T>,
        callback: impl FnMut(&[u8]) -> i32 + 'cb,
    ) -> io::Result<Self> {
        let map = MapHandle::try_from(map).map_err(io::Error::other)?;
        let mut builder = RingBufferBuilder::new();
        builder.add(&map, callback).map_err(io::Error::other)?;
        let ring = builder.build().map_err(io::Error::other)?;
        Ok(RingReader { source: Source::Ring { ring, _map: map } })
    }

    /// A reader of a BPF_MAP_TYPE_PERF_EVENT_ARRAY with `pages` pages per CPU. Samples the
    /// kernel had no room for are not counted here: bpf_perf_event_output fails for them, and
    /// BPF counts the loss by cause and call, as with the ring buffer.
    pub(crate) fn perf<M: MapCore>(
        map: &M,
        pages: usize,
        mut callback: impl FnMut(&[u8]) -> i32 + 'cb,
    ) -> io::Result<Self> {
        let perf = PerfBufferBuilder::new(map)
            .pages(pages)
            .sample_cb(move |_cpu, data: &[u8]| {
                callback(data);
            })
            .build()
            .map_err(io::Error::other)?;
        Ok(RingReader { source: Source::Perf(perf) })
    }

    /// Waits up to `timeout` for records and reads them. libbpf reads nothing when the wait
    /// times out: call [`RingReader::consume`] after it when records may wait unannounced.
    pub fn poll(&self, timeout: Duration) -> io::Result<()> {
        quiet_if_interrupted(match &self.source {
            Source::Ring { ring, .. } => ring.poll(timeout),
            Source::Perf(perf) => perf.poll(timeout),
        })
    }

    /// Reads every record there, without waiting.
    pub fn consume(&self) -> io::Result<()> {
        quiet_if_interrupted(match &self.source {
            Source::Ring { ring, .. } => ring.consume(),
            Source::Perf(perf) => perf.consume(),
        })
    }
}

fn quiet_if_interrupted(result: Result<(), libbpf_rs::Error>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() != ErrorKind::Interrupted => Err(io::Error::other(err)),
        _ => Ok(()),
    }
}

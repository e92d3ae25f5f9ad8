//! Reading a BPF ring buffer through a callback: the one place outside this crate's loaders
//! where userspace meets libbpf's ring API, so the crates above never depend on libbpf-rs.
//!
//! Must stay true: a wait cut short by a signal is not an error (Ctrl-C is how captures end);
//! the map's descriptor lives as long as the reader.

use std::io;
use std::time::Duration;

use libbpf_rs::{ErrorKind, MapHandle, MapImpl, RingBuffer, RingBufferBuilder};

/// Reads records of one ring buffer map, calling `callback` for each: 0 goes on, a negative
/// value stops the current read early (the records after it stay for the next one).
pub struct RingReader<'cb> {
    ring: RingBuffer<'cb>,
    /// The map's own descriptor, kept open while the ring is read.
    _map: MapHandle,
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
        Ok(RingReader { ring, _map: map })
    }

    /// Waits up to `timeout` for records and reads them. libbpf reads nothing when the wait
    /// times out: call [`RingReader::consume`] after it when records may wait unannounced.
    pub fn poll(&self, timeout: Duration) -> io::Result<()> {
        quiet_if_interrupted(self.ring.poll(timeout))
    }

    /// Reads every record there, without waiting.
    pub fn consume(&self) -> io::Result<()> {
        quiet_if_interrupted(self.ring.consume())
    }
}

fn quiet_if_interrupted(result: Result<(), libbpf_rs::Error>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() != ErrorKind::Interrupted => Err(io::Error::other(err)),
        _ => Ok(()),
    }
}

//! The clock of BPF's timestamps (`bpf_ktime_get_ns`: CLOCK_MONOTONIC) as userspace reads it,
//! and its offset to wall-clock time, for stamping events and packets.

/// CLOCK_MONOTONIC now: comparable with the `ts_ns` of the records BPF writes.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds to add to a CLOCK_MONOTONIC stamp for wall-clock time (since the epoch).
pub fn monotonic_to_wall_offset() -> u64 {
    let wall = clock_ns(libc::CLOCK_REALTIME);
    let mono = clock_ns(libc::CLOCK_MONOTONIC);
    wall.saturating_sub(mono)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it. Both clocks used
    // here always exist on Linux, so the call cannot fail and `ts` stays well-formed.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_is_monotonic_plus_the_offset() {
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let derived = monotonic_ns() + monotonic_to_wall_offset();
        assert!(derived.abs_diff(wall) < 50_000_000, "{derived} vs {wall}");
    }
}

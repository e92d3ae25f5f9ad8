//! BPF's slots for Reads in flight (`read_slots` in tlstap.bpf.c; `struct tlstap_read_slot`
//! in events.h), mapped into tlstap so that it can free the slots of processes that died
//! inside a Read. Such a slot stays claimed, and until it is freed every Read that hashes to
//! it takes BPF's slower hash map: correct, only slower, but a long host-wide capture across
//! many process restarts would otherwise slowly lose the fast path.
//!
//! Must stay true: tlstap touches a slot only through atomic operations, in the order
//! events.h gives (tgid, then g), and only for a process that no longer exists, which can no
//! longer reach its own slot.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::skel::types::tlstap_read_slot;

/// The `read_slots` array, mapped shared and writable; unmapped on drop.
#[derive(Debug)]
pub struct ReadSlots {
    base: NonNull<u8>,
    len: usize,
    slots: usize,
}

impl ReadSlots {
    /// Maps the array map behind `fd`, which has `slots` entries of `tlstap_read_slot`.
    pub(crate) fn map(fd: &impl AsRawFd, slots: usize) -> io::Result<Self> {
        let len = slots * size_of::<tlstap_read_slot>();
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks that the map is
        // mmapable and at least `len` long, and the result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(ReadSlots { base, len, slots })
    }

    fn g(&self, slot: usize) -> &AtomicU64 {
        self.field(slot, offset_of!(tlstap_read_slot, g))
    }

    fn tgid(&self, slot: usize) -> &AtomicU32 {
        self.field(slot, offset_of!(tlstap_read_slot, tgid))
    }

    fn field<T>(&self, slot: usize, offset: usize) -> &T {
        assert!(slot < self.slots);
        // SAFETY: the offset lies inside slot `slot` of the mapping (checked above), which
        // lives as long as `self`; the mapping is page-aligned and the struct's fields are
        // naturally aligned (events.h), so the atomic is aligned; BPF touches these words only
        // with atomic instructions or single aligned stores, which atomics may share.
        unsafe { &*self.base.as_ptr().add(slot * size_of::<tlstap_read_slot>() + offset).cast::<T>() }
    }

    /// Frees the slots whose owner process `alive` says is gone; returns how many it freed.
    /// `alive` is asked once per process.
    pub fn free_dead(&self, mut alive: impl FnMut(u32) -> bool) -> usize {
        let mut verdicts = std::collections::HashMap::new();
        let mut freed = 0;
        for slot in 0..self.slots {
            let g = self.g(slot).load(Ordering::Acquire);
            let tgid = self.tgid(slot).load(Ordering::Acquire);
            // g without tgid: free, or being claimed right now.
            if g == 0 || tgid == 0 || *verdicts.entry(tgid).or_insert_with(|| alive(tgid)) {
                continue;
            }
            if self.tgid(slot).compare_exchange(tgid, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
                && self.g(slot).compare_exchange(g, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                freed += 1;
            }
        }
        freed
    }
}

impl Drop for ReadSlots {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `map`, unmapped only here.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

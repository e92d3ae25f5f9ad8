//! RELATIVE dynamic relocations of a PIE (RELA with explicit addends, RELR with implicit ones),
//! so pointers stored in a position-independent Go binary can be read as base-0 addresses.

use std::cell::{Cell, OnceCell};

use object::elf;

use crate::elf::{read_u64, Image};

/// The RELATIVE relocations of an image.
///
/// Lookups start as linear scans (most analyses need a handful); after
/// [`LINEAR_LOOKUPS`] of them a sorted index is built once and binary-searched.
#[derive(Debug, Default)]
pub struct Relocations {
    /// (patched address, addend) from RELA tables, in file order.
    rela: Vec<(u64, u64)>,
    /// `rela` sorted by address, built on demand.
    sorted: OnceCell<Vec<(u64, u64)>>,
    lookups: Cell<u32>,
    /// Number of addresses patched by the RELR table (their addends are the words in place).
    relr_count: usize,
}

/// DT_RELR / DT_RELRSZ (not in every `object` release).
const DT_RELR: u32 = 36;
const DT_RELRSZ: u32 = 35;

/// Upper bound on RELA entries kept (16 bytes each), whatever size the dynamic section claims.
const MAX_RELOCS: usize = 1 << 24;

/// Single lookups answered by a linear scan before the sorted index is built.
const LINEAR_LOOKUPS: u32 = 16;

impl Relocations {
    pub(crate) fn load(image: &Image<'_>) -> Relocations {
        let relative = match image.arch {
            crate::Arch::Amd64 => elf::R_X86_64_RELATIVE,
            crate::Arch::Arm64 => elf::R_AARCH64_RELATIVE,
        };
        let mut out = Relocations::default();
        let rela = image.dyn_value(elf::DT_RELA).zip(image.dyn_value(elf::DT_RELASZ));
        if let Some(bytes) = rela.and_then(|(addr, size)| image.bytes_at(addr, size)) {
            let ent = image.dyn_value(elf::DT_RELAENT).unwrap_or(24);
            let ent = usize::try_from(ent).ok().filter(|&e| e >= 24).unwrap_or(24);
            for chunk in bytes.chunks_exact(ent).take(MAX_RELOCS) {
                let (Some(off), Some(info), Some(addend)) =
                    (read_u64(chunk, 0), read_u64(chunk, 8), read_u64(chunk, 16))
                else {
                    continue;
                };
                if info & 0xffff_ffff == u64::from(relative) {
                    out.rela.push((off, addend));
                }
            }
        }
        let relr = image.dyn_value(DT_RELR).zip(image.dyn_value(DT_RELRSZ));
        if let Some(bytes) = relr.and_then(|(addr, size)| image.bytes_at(addr, size)) {
            out.relr_count = count_relr(bytes);
        }
        out
    }

    fn sorted(&self) -> &[(u64, u64)] {
        self.sorted.get_or_init(|| {
            let mut v = self.rela.clone();
            v.sort_unstable_by_key(|r| r.0);
            v
        })
    }

    /// The addend of the RELA RELATIVE relocation patching `vaddr`.
    pub fn addend_at(&self, vaddr: u64) -> Option<u64> {
        if self.sorted.get().is_none() {
            let n = self.lookups.get().saturating_add(1);
            self.lookups.set(n);
            if n <= LINEAR_LOOKUPS {
                return self.rela.iter().find(|r| r.0 == vaddr).map(|r| r.1);
            }
        }
        let sorted = self.sorted();
        let i = sorted.binary_search_by_key(&vaddr, |r| r.0).ok()?;
        sorted.get(i).map(|r| r.1)
    }

    /// The relocations patching addresses in `lo..hi`, sorted (one linear pass; for reading
    /// a whole structure without building the full index).
    pub fn window(&self, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        let mut w: Vec<(u64, u64)> = match self.sorted.get() {
            Some(s) => {
                let start = s.partition_point(|r| r.0 < lo);
                s.get(start..).unwrap_or(&[]).iter().take_while(|r| r.0 < hi).copied().collect()
            }
            None => self.rela.iter().filter(|r| r.0 >= lo && r.0 < hi).copied().collect(),
        };
        w.sort_unstable_by_key(|r| r.0);
        w
    }

    /// Addresses that RELA relocations set to `value` (base 0).
    pub fn sites_with_addend(&self, value: u64) -> impl Iterator<Item = u64> + '_ {
        self.rela.iter().filter(move |r| r.1 == value).map(|r| r.0)
    }

    /// Number of (RELA RELATIVE, RELR) relocations.
    pub fn counts(&self) -> (usize, usize) {
        (self.rela.len(), self.relr_count)
    }
}

/// Counts the addresses a DT_RELR table (SHT_RELR, 64-bit) patches, without listing them: a
/// few MiB of bitmaps name tens of millions of words (the count is only a diagnostic).
///
/// An even entry is an address (one word); an odd entry is a bitmap whose bits 1..63 each
/// patch one of the 63 words after the cursor.
pub(crate) fn count_relr(bytes: &[u8]) -> usize {
    bytes
        .chunks_exact(8)
        .filter_map(|chunk| read_u64(chunk, 0))
        .map(|entry| if entry & 1 == 0 { 1 } else { (entry >> 1).count_ones() as usize })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relr_address_then_bitmaps() {
        let mut table = Vec::new();
        table.extend_from_slice(&0x1000u64.to_le_bytes()); // one address
        table.extend_from_slice(&0b1011u64.to_le_bytes()); // bits 1 and 3: two words
        table.extend_from_slice(&u64::MAX.to_le_bytes()); // bits 1..63: 63 words
        assert_eq!(count_relr(&table), 1 + 2 + 63);
    }

    #[test]
    fn relr_ignores_trailing_bytes() {
        assert_eq!(count_relr(&[1, 2, 3]), 0);
    }
}
